// Tokenizer (on a small tokenizer we write), NFC, the Jinja engine and chat formats, safetensors,
// the `tokenize` and `chat-template` commands.
#include <gtest/gtest.h>

#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>

#include "trainer/commands/cli.h"
#include "trainer/text/chat.h"
#include "trainer/text/chat_templates.h"
#include "trainer/text/jinja.h"
#include "trainer/text/safetensors.h"
#include "trainer/text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace distil::text;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(DISTIL_BINARY_DIR) / "test-tmp" / "text" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Tokenizer small_tokenizer(const std::string& name, const ByteLevelTokenizerSpec& spec = {}) {
  const auto dir = fresh_dir(name);
  write_byte_level_tokenizer(dir, spec);
  return Tokenizer::from_model_dir(dir);
}

std::string byte_level(std::string_view s) { return bytes_to_byte_level(s); }

// ---------------------------------------------------------------- tokenizer

TEST(TextTokenizer, BytesOnlyEncodesEveryByteAndRoundTrips) {
  const auto tok = small_tokenizer("bytes");
  EXPECT_EQ(tok.vocab_size(), 256 + 3);
  const std::string text = "héllo\tworld \xF0\x9F\x98\x80\n";
  const auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());  // NFC-stable text, one token per byte
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(tok.token_bytes(ids[i]), std::string(1, text[i]));
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_EQ(tok.id_to_token(ids[0]), "h");
  EXPECT_EQ(*tok.token_to_id("Ġ"), static_cast<int32_t>(' '));  // byte-level alphabet: space -> Ġ
}

TEST(TextTokenizer, MergesApplyByRankNotByOrderOfAppearance) {
  ByteLevelTokenizerSpec spec;
  // Rank 0 merges "b c" even though "a b" appears first in the text.
  spec.merges = {{"b", "c"}, {"a", "b"}, {"a", "bc"}};
  const auto tok = small_tokenizer("ranks", spec);
  const auto ids = tok.encode("abc");
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(tok.id_to_token(ids[0]), "abc");
  const auto ab = tok.encode("abd");  // only "a b" applies
  ASSERT_EQ(ab.size(), 2u);
  EXPECT_EQ(tok.id_to_token(ab[0]), "ab");
  // Leftmost first among equal ranks: "aaa" with only "a a" -> "aa" + "a".
  spec.merges = {{"a", "a"}};
  const auto tok2 = small_tokenizer("ranks2", spec);
  const auto aaa = tok2.encode("aaa");
  ASSERT_EQ(aaa.size(), 2u);
  EXPECT_EQ(tok2.id_to_token(aaa[0]), "aa");
  EXPECT_EQ(tok2.id_to_token(aaa[1]), "a");
}

TEST(TextTokenizer, PreTokenizerKeepsMergesInsideWords) {
  ByteLevelTokenizerSpec spec;
  spec.merges = {{"Ġ", "a"}, {"a", "Ġ"}};
  const auto tok = small_tokenizer("pretok", spec);
  // The Qwen regex splits "a a" into "a" and " a": " a" merges, "a " never forms.
  const auto ids = tok.encode("a a");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(tok.id_to_token(ids[1]), "Ġa");
}

TEST(TextTokenizer, SpecialTokensMatchedBeforeSplittingUnlessDisallowed) {
  const auto tok = small_tokenizer("special");
  const int32_t im_start = *tok.token_to_id("<|im_start|>"), im_end = *tok.token_to_id("<|im_end|>");
  const auto ids = tok.encode("x<|im_start|>user<|im_end|>");
  ASSERT_EQ(ids.size(), 1u + 1u + 4u + 1u);
  EXPECT_EQ(ids[1], im_start);
  EXPECT_EQ(ids.back(), im_end);
  EXPECT_TRUE(tok.is_special(im_end));
  EXPECT_EQ(tok.decode(ids), "x<|im_start|>user<|im_end|>");
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "xuser");
  const auto plain = tok.encode("<|im_end|>", /*allow_special=*/false);
  EXPECT_EQ(plain.size(), std::string("<|im_end|>").size());
  EXPECT_EQ(tok.eos_token_ids(), std::vector<int32_t>{im_end});
  EXPECT_EQ(tok.pad_token_id(), tok.token_to_id("<|endoftext|>"));
  EXPECT_FALSE(tok.chat_template().empty());
  const std::vector<std::pair<std::string, std::string>> special = {{"eos_token", "<|im_end|>"},
                                                                    {"pad_token", "<|endoftext|>"}};
  EXPECT_EQ(tok.special_token_texts(), special);
}

TEST(TextTokenizer, InvalidUtf8IsEncodedAsBytesAndDecodedWithReplacement) {
  const auto tok = small_tokenizer("invalid");
  const std::string bad = "ok\xFF\xC3(\xE2\x82";
  const auto ids = tok.encode(bad);
  std::string raw;
  for (int32_t id : ids) raw += tok.token_bytes(id);
  EXPECT_EQ(raw, bad);
  EXPECT_EQ(tok.decode(ids), "ok\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD");
}

TEST(TextTokenizer, LongWhitespaceRunIsLinearNotQuadratic) {
  ByteLevelTokenizerSpec spec;
  spec.merges = {{"Ġ", "Ġ"}, {"ĠĠ", "ĠĠ"}};
  const auto tok = small_tokenizer("spaces", spec);
  const std::string spaces(200000, ' ');
  const auto ids = tok.encode(spaces + "x");
  EXPECT_EQ(tok.decode(ids), spaces + "x");
  EXPECT_LE(ids.size(), 200000u / 4 + 3);
}

TEST(TextTokenizer, MalformedFilesGiveErrorsNamingTheField) {
  const auto expect_error = [](const nlohmann::json& j, const std::string& needle) {
    try {
      Tokenizer::from_json(j);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const TokenizerError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(nlohmann::json::array(), "object");
  expect_error({{"model", {{"type", "WordPiece"}}}}, "model.type");
  expect_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", "zero"}}}}}}, "model.vocab");
  expect_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {"a b"}}}}}, "model.merges[0]");
  expect_error({{"model", {{"type", "BPE"}, {"vocab", {{"a", -4}}}}}}, "invalid id");
  expect_error({{"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}}},
                {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}}},
               "regex");
  expect_error({{"decoder", {{"type", "ByteLevel"}}}, {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}}},
               "byte-level vocabulary lacks");
  const auto dir = fresh_dir("bad_file");
  std::ofstream(dir / "tokenizer.json") << "{ not json";
  EXPECT_THROW(Tokenizer::from_file(dir / "tokenizer.json"), TokenizerError);
  EXPECT_THROW(Tokenizer::from_file(dir / "missing.json"), TokenizerError);
  const auto tok = small_tokenizer("bad_id");
  EXPECT_THROW(tok.id_to_token(100000), TokenizerError);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{-1, 104, 999999}), "h");  // unknown ids are dropped
}

TEST(TextTokenizer, LearnedMergesCompressTheCorpus) {
  const std::vector<std::string> corpus = {"the cat sat on the mat", "the dog ate the bone", "then they left"};
  const auto merges = learn_bpe_merges(corpus, 20);
  ASSERT_FALSE(merges.empty());
  // "t h" and "h e" both occur 6 times (the x4, then, they); ties go to the smaller pair.
  EXPECT_EQ(merges[0], std::make_pair(std::string("h"), std::string("e")));
  ByteLevelTokenizerSpec spec;
  spec.merges = merges;
  const auto tok = small_tokenizer("learned", spec);
  for (const auto& text : corpus) {
    const auto ids = tok.encode(text);
    EXPECT_LT(ids.size(), text.size());
    EXPECT_EQ(tok.decode(ids), text);
  }
}

// Llama 3's tokenizer sets ignore_merges: a pre-tokenized word found whole in the vocabulary is
// one token even when no merge sequence builds it.
TEST(TextTokenizer, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  const auto dir = fresh_dir("ignore_merges");
  write_byte_level_tokenizer(dir, {});
  nlohmann::json j;
  {
    std::ifstream in(dir / "tokenizer.json");
    j = nlohmann::json::parse(in);
  }
  j["model"]["vocab"]["hello"] = 300;
  const auto without = Tokenizer::from_json(j);
  EXPECT_EQ(without.encode("hello").size(), 5u);
  j["model"]["ignore_merges"] = true;
  const auto with = Tokenizer::from_json(j);
  EXPECT_EQ(with.encode("hello"), std::vector<int32_t>{300});
  EXPECT_EQ(with.encode("hello hello").size(), 1u + 6u);  // " hello" is not in the vocabulary
  EXPECT_EQ(with.decode(with.encode("hello hello")), "hello hello");
}

TEST(TextTokenizer, ByteLevelAlphabet) {
  EXPECT_EQ(byte_level(" "), "Ġ");
  EXPECT_EQ(byte_level("\n"), "Ċ");
  EXPECT_EQ(byte_level("a"), "a");
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, static_cast<char>(b));
    EXPECT_EQ(byte_level_to_bytes(byte_level(s)), s);
  }
  EXPECT_FALSE(byte_level_to_bytes("\xE4\xB8\xAD").has_value());  // 中 is not in the alphabet
}

TEST(TextNfc, ComposesReordersAndLeavesComposedTextAlone) {
  EXPECT_EQ(nfc_normalize("e\xCC\x81"), "\xC3\xA9");                   // e + U+0301 -> é
  EXPECT_EQ(nfc_normalize("A\xCC\x8A"), "\xC3\x85");                   // A + ring -> Å
  EXPECT_EQ(nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");                // Angstrom sign (singleton) -> Å
  EXPECT_EQ(nfc_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul jamo -> 각
  // q + dot below (220) + dot above (230) in either order -> same canonical order, no composite.
  EXPECT_EQ(nfc_normalize("q\xCC\x87\xCC\xA3"), "q\xCC\xA3\xCC\x87");
  // o + circumflex + dot below -> ộ (U+1ED9): reordering then composition.
  EXPECT_EQ(nfc_normalize("o\xCC\x82\xCC\xA3"), "\xE1\xBB\x99");
  EXPECT_EQ(nfc_normalize("plain ascii"), "plain ascii");
  EXPECT_EQ(nfc_normalize("\xE4\xB8\xAD\xE6\x96\x87"), "\xE4\xB8\xAD\xE6\x96\x87");
  EXPECT_EQ(nfc_normalize("\xFF" "e\xCC\x81"), "\xFF\xC3\xA9");  // invalid bytes pass through
}

// ---------------------------------------------------------------- Jinja engine

// tests/model/jinja_cases.json: hand-written templates with what @huggingface/jinja renders for
// them (chat_template_conformance_test re-checks those values against it).
TEST(TextJinja, HandWrittenCasesRenderAsHuggingFaceJinjaDoes) {
  std::ifstream in(fs::path(DISTIL_SOURCE_DIR) / "tests/model/jinja_cases.json");
  const auto doc = nlohmann::ordered_json::parse(in);
  ASSERT_GE(doc["cases"].size(), 50u);
  for (const auto& c : doc["cases"]) {
    const std::string tpl = c["template"].get<std::string>();
    std::string ours, error;
    try {
      ours = jinja::Template(tpl).render(c["context"]);
    } catch (const jinja::Error& e) {
      error = e.what();
    }
    if (c.contains("expected")) {
      EXPECT_EQ(error, "") << tpl;
      EXPECT_EQ(ours, c["expected"].get<std::string>()) << tpl;
    } else {
      EXPECT_NE(error, "") << tpl << " should fail, as in @huggingface/jinja (" << c["error"] << ")";
    }
  }
}

std::string render_error(const std::string& tpl, const nlohmann::ordered_json& context = nlohmann::ordered_json::object(),
                         const jinja::Limits& limits = {}) {
  try {
    jinja::Template(tpl).render(context, limits);
  } catch (const jinja::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error from " << tpl;
  return "";
}

TEST(TextJinja, UnsupportedConstructsAndFailuresAreNamedWithTheLine) {
  const auto has = [](const std::string& what, const std::string& needle) {
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  };
  const std::string call = render_error("ok\n{% call foo() %}x{% endcall %}");
  has(call, "line 2");
  has(call, "{% call %}");
  has(render_error("{% include 'x' %}"), "{% include %}");
  has(render_error("{{ 'x' | frobnicate }}"), "filter 'frobnicate'");
  has(render_error("{{ 1 is divisibleby(3) }}"), "tests with arguments");
  has(render_error("{{ 1 is frob }}"), "unknown test 'is frob'");
  has(render_error("a\n\n{% if x %}never closed"), "line 3: {% if %} is never closed (expected {% endif %})");
  has(render_error("{% for x in y %}"), "expected {% endfor %}");
  has(render_error("{% endif %}"), "without a matching");
  has(render_error("{{ x.startswith('a') }}", {{"x", 3}}), "cannot call method 'startswith'");
  has(render_error("{{ 'unterminated }}"), "unterminated string");
  has(render_error("{{ 'a' < 'b' }}"), "operator '<'");
  has(render_error("{% break %}"), "outside a for loop");
  has(render_error("{{ 9223372036854775807 + 1 }}"), "integer overflow");
  has(render_error("{{ 1 // 0 }}"), "by zero");
  // raise_exception: the template's own message surfaces, as its own exception type.
  try {
    jinja::Template("\n{{ raise_exception('Conversation roles must alternate') }}").render({});
    ADD_FAILURE() << "raise_exception did not throw";
  } catch (const jinja::RaisedException& e) {
    EXPECT_EQ(e.message(), "Conversation roles must alternate");
    has(e.what(), "line 2");
  }
  EXPECT_THROW(jinja::Template("{{ x }}").render(nlohmann::ordered_json::array()), jinja::Error);  // context must be an object
}

TEST(TextJinja, StrftimeNowFormatsTheLocalDate) {
  // The directives @huggingface/jinja implements; the date is read before and after rendering.
  const auto today = [] {
    const std::time_t now = std::time(nullptr);
    std::tm t{};
    localtime_r(&now, &t);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %B %b 100%%", &t);
    return std::string(buf);
  };
  const std::string before = today();
  const std::string rendered = jinja::Template("{{ strftime_now('%Y-%m-%d %B %b 100%%') }}").render({});
  const std::string after = today();
  EXPECT_TRUE(rendered == before || rendered == after) << rendered;
  EXPECT_EQ(jinja::Template("{{ strftime_now('%Q') }}").render({}), "%Q");  // unknown directives stay
}

// Hostile templates: seeded mutations of the real Qwen3 template (bytes deleted, duplicated,
// replaced by Jinja punctuation) either render or fail with jinja::Error, never anything else.
TEST(TextJinja, MutatedRealTemplatesRenderOrFailCleanly) {
  const std::string original = distil::text::kQwen3ChatTemplate;
  const auto context = nlohmann::ordered_json::parse(
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                       {"role": "assistant", "content": "<think>r</think>A", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                       {"role": "tool", "content": "T"}], "add_generation_prompt": true, "tools": [{"name": "t"}]})");
  const std::string punctuation = "{}%#-()[]'\".|:~+*/=!<>, \n";
  std::mt19937 rng(7);
  jinja::Limits limits;
  limits.max_steps = 200000;
  size_t rendered = 0, failed = 0;
  for (int round = 0; round < 1500; ++round) {
    std::string t = original;
    for (int edit = 0, edits = 1 + static_cast<int>(rng() % 4); edit < edits; ++edit) {
      const size_t at = rng() % t.size();
      switch (rng() % 3) {
        case 0: t.erase(at, 1 + rng() % 8); break;
        case 1: t.insert(at, t.substr(at, 1 + rng() % 40)); break;
        default: t[at] = punctuation[rng() % punctuation.size()];
      }
      if (t.empty()) t = "x";
    }
    try {
      jinja::Template(t).render(context, limits);
      ++rendered;
    } catch (const jinja::Error&) {
      ++failed;
    }
  }
  EXPECT_GT(rendered, 0u);
  EXPECT_GT(failed, 0u);
}

TEST(TextJinja, LimitsStopRunawayTemplates) {
  jinja::Limits small;
  small.max_steps = 100000;
  small.max_output_bytes = 1 << 16;
  small.max_depth = 64;
  EXPECT_NE(render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}, small).find("deeper than 64"),
            std::string::npos);
  EXPECT_NE(render_error("{% for i in range(100000000) %}x{% endfor %}", {}, small).find("evaluation steps"),
            std::string::npos);
  EXPECT_NE(render_error("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                         {}, small)
                .find("exceeds 65536 bytes"),
            std::string::npos);
  std::string deep(2000, '(');
  EXPECT_NE(render_error("{{ " + deep + " }}").find("nesting deeper"), std::string::npos);
  nlohmann::ordered_json nested = 1;
  for (int i = 0; i < 300; ++i) nested = nlohmann::ordered_json::array({nested});
  EXPECT_NE(render_error("{{ x }}", {{"x", nested}}).find("deeper"), std::string::npos);
}

// ---------------------------------------------------------------- chat formats
// The built-in formats are templates too; chatml and llama3 are the real Qwen3 and Llama 3.1
// templates (chat_template_conformance_test compares them with the npm packages' files). These
// expectations are worked out by hand from those templates.

TEST(TextChat, ChatMLIsQwen3Template) {
  const auto chat = ChatFormat::from_name("qwen3");
  EXPECT_EQ(chat.name(), "chatml");
  const std::vector<ChatMessage> m = {{"system", "S"}, {"user", "Hi"}};
  EXPECT_EQ(chat.render(m, true), "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chat.render(m, true, /*enable_thinking=*/false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(chat.render({{"user", "Hi"}}, false), "<|im_start|>user\nHi<|im_end|>\n");
  // An earlier assistant turn loses its reasoning; the final one (after the last user turn) keeps
  // it, re-wrapped as "<think>\n{reasoning}\n</think>\n\n{content}".
  const std::vector<ChatMessage> history = {{"user", "Q1"}, {"assistant", "<think>\nr1\n</think>\n\nA1"},
                                            {"user", "Q2"}, {"assistant", "<think>r2</think>A2"}};
  EXPECT_EQ(chat.render(history, false),
            "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
            "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n");
  // A final assistant turn without reasoning still gets an empty think block.
  EXPECT_EQ(chat.render({{"user", "Q"}, {"assistant", "A"}}, false),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n");
  // Tool results are grouped into one user turn.
  EXPECT_EQ(chat.render({{"user", "Q"}, {"tool", "r1"}, {"tool", "r2"}}, false),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n"
            "<tool_response>\nr2\n</tool_response><|im_end|>\n");
  // Fields beyond role/content reach the template: reasoning_content and tool calls.
  const auto json_messages = nlohmann::ordered_json::parse(
      R"([{"role":"user","content":"Q"},{"role":"assistant","content":"","reasoning_content":"R",)"
      R"("tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]}])");
  EXPECT_EQ(chat.render_json(json_messages, false),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\n<tool_call>\n"
            "{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call><|im_end|>\n");
  EXPECT_EQ(chat.end_of_turn(), "<|im_end|>");
  // Qwen3's template renders nothing for a role it does not know (no guessing on our side).
  EXPECT_EQ(chat.render({{"wizard", "x"}}, false), "");
}

TEST(TextChat, Llama3AndOlmoAndPlain) {
  const auto llama = ChatFormat::from_name("llama3");
  EXPECT_EQ(llama.render({{"system", " S "}, {"user", "Hi\n"}}, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(llama.end_of_turn(), "<|eot_id|>");
  const auto olmo = ChatFormat::from_name("olmo");
  EXPECT_EQ(olmo.render({{"user", "Hi"}, {"assistant", "Yo"}, {"user", "Q"}}, true),
            "<|endoftext|><|user|>\nHi\n<|assistant|>\nYo<|endoftext|>\n<|user|>\nQ\n<|assistant|>\n");
  EXPECT_EQ(olmo.render({{"user", "Hi"}, {"assistant", "Yo"}}, false), "<|endoftext|><|user|>\nHi\n<|assistant|>\nYo<|endoftext|>");
  EXPECT_EQ(olmo.end_of_turn(), "<|endoftext|>");
  // "olmo2" is the format's name; "olmo", its older spelling, still selects it.
  const auto olmo2 = ChatFormat::from_name("olmo2");
  EXPECT_EQ(olmo2.name(), "olmo2");
  EXPECT_EQ(olmo.name(), "olmo2");
  EXPECT_EQ(olmo2.render({{"user", "Hi"}, {"assistant", "Yo"}}, false), olmo.render({{"user", "Hi"}, {"assistant", "Yo"}}, false));
  const auto plain = ChatFormat::from_name("plain");
  EXPECT_EQ(plain.render({{"system", "S"}, {"user", "Q"}}, true), "S\n\nQ\n\n");
  EXPECT_EQ(plain.render({{"user", "Q"}}, false), "Q");
  EXPECT_EQ(plain.end_of_turn(), "");
  EXPECT_THROW(ChatFormat::from_name("vicuna"), std::invalid_argument);
}

void write_model_dir(const fs::path& dir, const nlohmann::json& tokenizer_config) {
  write_byte_level_tokenizer(dir, {});
  std::ofstream(dir / "tokenizer_config.json") << tokenizer_config.dump();
}

TEST(TextChat, TheModelsOwnTemplateIsTheDefault) {
  // A template of our own, with bos/eos from tokenizer_config.json: auto renders it, not a guess.
  const auto dir = fresh_dir("own_template");
  write_model_dir(dir, {{"bos_token", "<|endoftext|>"},
                        {"eos_token", {{"content", "<|im_end|>"}, {"lstrip", false}}},
                        {"chat_template", "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}"
                                          "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}"}});
  auto tok = Tokenizer::from_model_dir(dir);
  auto format = ChatFormat::for_model(tok, "auto");
  EXPECT_EQ(format.name(), "model");
  EXPECT_EQ(format.render({{"user", "hi"}}, true), "<|endoftext|>[USER] hi<|im_end|>[ASSISTANT] ");
  EXPECT_EQ(format.end_of_turn(), "<|im_end|>");
  EXPECT_EQ(ChatFormat::for_model(tok, "plain").render({{"user", "hi"}}, false), "hi");  // an explicit choice wins

  // The list form picks "default"; chat_template.jinja beside the config takes precedence.
  write_model_dir(dir, {{"chat_template", {{{"name", "tool_use"}, {"template", "T"}}, {{"name", "default"}, {"template", "D"}}}}});
  EXPECT_EQ(ChatFormat::for_model(Tokenizer::from_model_dir(dir), "auto").render({}, false), "D");
  std::ofstream(dir / "chat_template.jinja") << "from the jinja file\n";
  EXPECT_EQ(ChatFormat::for_model(Tokenizer::from_model_dir(dir), "auto").render({}, false), "from the jinja file");
  fs::remove(dir / "chat_template.jinja");

  // No template: auto says so instead of falling back; broken templates and configs are named.
  write_model_dir(dir, {{"eos_token", "<|im_end|>"}});
  try {
    ChatFormat::for_model(Tokenizer::from_model_dir(dir), "auto");
    ADD_FAILURE() << "auto without a template must fail";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no chat template"), std::string::npos) << e.what();
  }
  write_model_dir(dir, {{"chat_template", "{% for %}"}});
  EXPECT_THROW(ChatFormat::for_model(Tokenizer::from_model_dir(dir), "auto"), std::invalid_argument);
  write_model_dir(dir, {{"chat_template", {{{"name", "tool_use"}, {"template", "T"}}}}});
  EXPECT_THROW(Tokenizer::from_model_dir(dir), TokenizerError);
  write_model_dir(dir, {{"chat_template", 7}});
  EXPECT_THROW(Tokenizer::from_model_dir(dir), TokenizerError);

  // The tokenizers we write carry their format's template, which auto then renders.
  ByteLevelTokenizerSpec llama;
  llama.chat_format = "llama3";
  EXPECT_THROW(write_byte_level_tokenizer(dir, llama), TokenizerError);  // its template needs a bos
  llama.special_tokens = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
  llama.bos_token = "<|begin_of_text|>";
  llama.eos_token = llama.pad_token = "<|eot_id|>";
  write_byte_level_tokenizer(dir, llama);
  EXPECT_EQ(ChatFormat::for_model(Tokenizer::from_model_dir(dir), "auto").render({{"user", " Hi "}}, true),
            ChatFormat::from_name("llama3").render({{"user", " Hi "}}, true));
}

// ---------------------------------------------------------------- safetensors

std::vector<std::byte> bytes_of(const std::vector<float>& v) {
  std::vector<std::byte> out(v.size() * sizeof(float));
  std::memcpy(out.data(), v.data(), out.size());
  return out;
}

TEST(TextSafetensors, WriteReadRoundTripAllDtypes) {
  const auto dir = fresh_dir("st_roundtrip");
  const auto f = bytes_of({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f});
  std::vector<std::byte> u8(5, std::byte{7}), bf16(8, std::byte{1}), empty;
  std::vector<TensorToWrite> tensors = {{"w", DType::F32, {2, 3}, f},
                                        {"u", DType::U8, {5}, u8},
                                        {"b", DType::BF16, {2, 2}, bf16},
                                        {"e", DType::I64, {0, 4}, empty}};
  write_safetensors(dir / "x.safetensors", tensors, {{"format", "pt"}});
  const auto file = SafetensorsFile::open(dir / "x.safetensors");
  EXPECT_EQ(file->names(), (std::vector<std::string>{"b", "e", "u", "w"}));
  EXPECT_EQ(file->metadata().at("format"), "pt");
  const auto& w = file->tensor("w");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(0, std::memcmp(w.data.data(), f.data(), f.size()));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data.data()) % 8, 0u);  // header padded to 8 bytes
  EXPECT_EQ(file->tensor("e").numel(), 0);
  EXPECT_THROW(file->tensor("nope"), SafetensorsError);
}

// An independent reader written in Python (struct + json only) applying the format rules: the
// file our writer produces must be accepted and give back the same values.
TEST(TextSafetensors, IndependentPythonReaderAcceptsOurFiles) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  const auto dir = fresh_dir("st_python");
  const auto f = bytes_of({1.5f, -2.0f, 3.25f});
  std::vector<std::byte> i16(4, std::byte{2});
  write_safetensors(dir / "x.safetensors", std::vector<TensorToWrite>{{"a.weight", DType::F32, {3}, f}, {"z", DType::I16, {2}, i16}});
  const auto script = dir / "check.py";
  std::ofstream(script) << R"(import json, struct, sys
data = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', data[:8])[0]
assert 8 + n <= len(data), 'header beyond file'
header = json.loads(data[8:8 + n].decode('utf-8'))
assert n % 8 == 0, 'header not padded to 8'
buf = data[8 + n:]
sizes = {'F32': 4, 'I16': 2}
spans = []
for name, t in header.items():
    if name == '__metadata__':
        continue
    b, e = t['data_offsets']
    count = 1
    for d in t['shape']:
        count *= d
    assert e - b == count * sizes[t['dtype']], name
    spans.append((b, e))
spans.sort()
pos = 0
for b, e in spans:
    assert b == pos, 'gap or overlap'
    pos = e
assert pos == len(buf), 'trailing bytes'
b, e = header['a.weight']['data_offsets']
print(list(struct.unpack('<3f', buf[b:e])))
)";
  const std::string command = "/usr/bin/python3 -S " + script.string() + " " + (dir / "x.safetensors").string();
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char line[256] = {};
  const bool got = fgets(line, sizeof line, pipe) != nullptr;
  ASSERT_EQ(pclose(pipe), 0) << "python reader rejected the file";
  ASSERT_TRUE(got);
  EXPECT_EQ(std::string(line), "[1.5, -2.0, 3.25]\n");
}

TEST(TextSafetensors, TruncatedAndInconsistentFilesAreRejectedWithReasons) {
  const auto dir = fresh_dir("st_bad");
  const auto f = bytes_of({1, 2, 3, 4});
  write_safetensors(dir / "good.safetensors", std::vector<TensorToWrite>{{"w", DType::F32, {4}, f}});
  std::string good;
  {
    std::ifstream in(dir / "good.safetensors", std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary) << content;
    return dir / name;
  };
  const auto expect_error = [&](const fs::path& path, const std::string& needle) {
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << path << ": expected an error mentioning " << needle;
    } catch (const SafetensorsError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(write("short", "abc"), "truncated");
  expect_error(write("cut_data", good.substr(0, good.size() - 3)), "truncated");
  expect_error(write("cut_header", good.substr(0, 20)), "truncated");
  const auto with_header = [&](const std::string& json, size_t data_bytes) {
    std::string s(8, '\0');
    uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    return s + json + std::string(data_bytes, '\0');
  };
  expect_error(write("not_json", with_header("{nope", 0)), "not valid JSON");
  expect_error(write("bad_dtype", with_header(R"({"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4)), "F33");
  expect_error(write("bad_size", with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4)), "span");
  expect_error(write("overlap", with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4)),
               "overlapping");
  expect_error(write("trailing", with_header(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8)), "trailing");
  expect_error(write("negative", with_header(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)), "shape");
  expect_error(write("huge", with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4)), "w");
  std::string bad_len = good;
  bad_len[7] = '\x7f';
  expect_error(write("bad_len", bad_len), "too large");
  // Writer-side checks.
  EXPECT_THROW(write_safetensors(dir / "x", std::vector<TensorToWrite>{{"w", DType::F32, {5}, f}}), SafetensorsError);
  EXPECT_THROW(write_safetensors(dir / "x", std::vector<TensorToWrite>{{"w", DType::F32, {4}, f}, {"w", DType::F32, {4}, f}}),
               SafetensorsError);
}

TEST(TextSafetensors, ShardedCheckpointWithIndex) {
  const auto dir = fresh_dir("st_sharded");
  const auto a = bytes_of({1, 2, 3, 4}), b = bytes_of({5, 6}), c = bytes_of({7});
  const std::vector<TensorToWrite> tensors = {{"a", DType::F32, {4}, a}, {"b", DType::F32, {2}, b}, {"c", DType::F32, {1}, c}};
  const auto written = write_safetensors_checkpoint(dir, tensors, /*max_shard_bytes=*/16);
  EXPECT_EQ(written.size(), 3u);  // two shards + index
  EXPECT_TRUE(fs::exists(dir / "model-00001-of-00002.safetensors"));
  const auto ckpt = SafetensorsCheckpoint::open(dir);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(0, std::memcmp(ckpt.tensor("c").data.data(), c.data(), c.size()));
  // An index pointing at a tensor its shard lacks, or escaping the directory, is rejected.
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"zzz": "model-00001-of-00002.safetensors"}})";
  EXPECT_THROW(SafetensorsCheckpoint::open(dir), SafetensorsError);
  std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"a": "../../etc/passwd"}})";
  EXPECT_THROW(SafetensorsCheckpoint::open(dir), SafetensorsError);
  EXPECT_THROW(SafetensorsCheckpoint::open(fresh_dir("st_empty")), SafetensorsError);
}

// ---------------------------------------------------------------- distil-train tokenize

std::pair<int, std::string> run_tokenize(const std::vector<std::string>& args, const std::string& stdin_text) {
  CLI::App app;
  int exit_code = -1;
  distil::trainer::add_tokenize_command(app, exit_code);
  std::vector<const char*> argv = {"distil-train", "tokenize"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::istringstream in(stdin_text);
  std::ostringstream out;
  auto* old_in = std::cin.rdbuf(in.rdbuf());
  auto* old_out = std::cout.rdbuf(out.rdbuf());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (...) {
    std::cin.rdbuf(old_in);
    std::cout.rdbuf(old_out);
    throw;
  }
  std::cin.rdbuf(old_in);
  std::cout.rdbuf(old_out);
  return {exit_code, out.str()};
}

std::pair<int, std::string> run_chat_template(const std::vector<std::string>& args) {
  CLI::App app;
  int exit_code = -1;
  distil::trainer::add_chat_template_command(app, exit_code);
  std::vector<const char*> argv = {"distil-train", "chat-template"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out;
  auto* old_out = std::cout.rdbuf(out.rdbuf());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (...) {
    std::cout.rdbuf(old_out);
    throw;
  }
  std::cout.rdbuf(old_out);
  return {exit_code, out.str()};
}

TEST(TextChatTemplateCommand, PrintsExactlyTheRenderedText) {
  const auto dir = fresh_dir("chat_template_cli");
  write_byte_level_tokenizer(dir, {});
  const auto messages = dir / "messages.json";
  std::ofstream(messages) << R"([{"role": "user", "content": "hi"}])";
  auto [code, out] = run_chat_template({"--model", dir.string(), "--messages", messages.string()});
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "<|im_start|>user\nhi<|im_end|>\n");  // no newline added
  std::tie(code, out) = run_chat_template({"--model", dir.string(), "--messages", messages.string(),
                                           "--add-generation-prompt", "--enable-thinking", "false"});
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  std::tie(code, out) = run_chat_template({"--model", dir.string(), "--messages", messages.string(), "--format", "plain"});
  EXPECT_EQ(out, "hi");
  // Bad inputs: exit status 2 and nothing on stdout.
  std::tie(code, out) = run_chat_template({"--model", dir.string(), "--messages", messages.string(), "--enable-thinking", "maybe"});
  EXPECT_EQ(code, 2);
  EXPECT_EQ(out, "");
  std::ofstream(messages) << R"({"role": "user"})";
  EXPECT_EQ(run_chat_template({"--model", dir.string(), "--messages", messages.string()}).first, 2);
  std::ofstream(messages) << "[1]";
  EXPECT_EQ(run_chat_template({"--model", dir.string(), "--messages", messages.string()}).first, 2);
  std::ofstream(messages) << std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(run_chat_template({"--model", dir.string(), "--messages", messages.string()}).first, 2);
  std::ofstream(messages) << "[{not json";
  EXPECT_EQ(run_chat_template({"--model", dir.string(), "--messages", messages.string()}).first, 2);
  EXPECT_EQ(run_chat_template({"--model", dir.string(), "--messages", (dir / "missing.json").string()}).first, 2);
}

TEST(TextTokenizeCommand, EncodeDecodeAndChat) {
  const auto dir = fresh_dir("cli");
  ByteLevelTokenizerSpec spec;
  spec.merges = {{"h", "i"}};
  write_byte_level_tokenizer(dir, spec);
  const auto tok = Tokenizer::from_model_dir(dir);
  auto [code, out] = run_tokenize({"--model", dir.string()}, "hi!");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, nlohmann::json(tok.encode("hi!")).dump() + "\n");
  std::tie(code, out) = run_tokenize({"--model", dir.string(), "--decode"}, nlohmann::json(tok.encode("hi there")).dump());
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, "hi there");
  std::tie(code, out) = run_tokenize({"--model", dir.string(), "--chat"}, "hi");
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out, nlohmann::json(tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")).dump() + "\n");
  std::tie(code, out) = run_tokenize({"--model", dir.string(), "--decode"}, "[1, \"x\"]");
  EXPECT_EQ(code, 2);
  std::tie(code, out) = run_tokenize({"--model", (dir / "missing").string()}, "x");
  EXPECT_EQ(code, 2);
}

}  // namespace
