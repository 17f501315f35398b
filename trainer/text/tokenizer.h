// Hugging Face `tokenizer.json` tokenizers: byte-level BPE (Qwen2/3, Llama 3, OLMo 2/3, GPT-2),
// with the model's pre-tokenizer split regex (PCRE2, Unicode properties), NFC normalisation,
// added/special tokens matched before splitting, merges by rank, optional byte fallback, decode.
// No LibTorch here: this library is cheap to compile and used by the env side too.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::text {

// Thrown for malformed tokenizer files; the message names the file/field and the problem.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Tokenizer {
 public:
  // Parses a `tokenizer.json` (the "model" must be BPE).
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  static Tokenizer from_json(const nlohmann::json& tokenizer_json);
  // Reads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (eos/pad/bos tokens,
  // chat template) and DIR/generation_config.json (extra eos ids).
  static Tokenizer from_model_dir(const std::filesystem::path& dir);

  // allow_special=false treats special added tokens (special=true) as ordinary text; non-special
  // added tokens such as <think> are always matched, as Hugging Face does.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  // Invalid UTF-8 produced by partial byte sequences is replaced by U+FFFD (HF "errors=replace").
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes one token stands for (no replacement of partial UTF-8); empty for unknown ids.
  std::string token_bytes(int32_t id) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of `id` (byte-level alphabet, e.g. "Ġhello"); throws TokenizerError
  // for ids outside the vocabulary.
  const std::string& id_to_token(int32_t id) const;
  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const;
  bool is_special(int32_t id) const;

  // From tokenizer_config.json / generation_config.json when loaded with from_model_dir.
  const std::vector<int32_t>& eos_token_ids() const;
  std::optional<int32_t> pad_token_id() const;
  std::optional<int32_t> bos_token_id() const;
  // The model's own Jinja chat template: DIR/chat_template.jinja when present, else
  // tokenizer_config.json's chat_template (a string, or the one named "default" in a list of
  // {name, template}); "" when the model has none. Rendered by text::ChatFormat.
  const std::string& chat_template() const;
  // The special tokens tokenizer_config.json names, as apply_chat_template passes them to the
  // template: (bos_token | eos_token | unk_token | sep_token | pad_token | cls_token | mask_token,
  // text) for each that is set.
  const std::vector<std::pair<std::string, std::string>>& special_token_texts() const;

  // Copies of a Tokenizer share one immutable vocabulary and these settings: set them before
  // handing copies to other threads.
  void set_eos_token_ids(std::vector<int32_t> ids);
  void set_pad_token_id(std::optional<int32_t> id);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// What write_byte_level_tokenizer writes: a valid HF byte-level BPE tokenizer. The vocabulary is
// the 256 byte tokens (GPT-2 byte-to-unicode alphabet, ids 0..255), then one token per merge
// (ids 256..), then the special tokens.
struct ByteLevelTokenizerSpec {
  std::vector<std::pair<std::string, std::string>> merges;  // in the byte-level alphabet
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  std::string eos_token = "<|im_end|>";
  std::string pad_token = "<|endoftext|>";
  std::string bos_token;            // "" = none
  std::string chat_format = "chatml";  // chatml | llama3 | olmo2 (or olmo) | plain: template written
  // The Qwen2/3 pre-tokenizer regex by default.
  std::string split_regex;
};

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json (creating DIR).
void write_byte_level_tokenizer(const std::filesystem::path& dir, const ByteLevelTokenizerSpec& spec);

// Learns `num_merges` byte-level BPE merges from a corpus (classic BPE: most frequent adjacent
// pair within pre-tokenized words, ties broken by the lexicographically smallest pair), for
// building small demo tokenizers.
std::vector<std::pair<std::string, std::string>> learn_bpe_merges(std::span<const std::string> corpus,
                                                                   int num_merges,
                                                                   const std::string& split_regex = "");

// The Qwen2/3 split regex (also GPT-4o-like); and the GPT-2 one.
extern const char* const kQwenSplitRegex;
extern const char* const kGpt2SplitRegex;

// Byte <-> byte-level alphabet (GPT-2 bytes_to_unicode), as UTF-8 strings.
std::string bytes_to_byte_level(std::string_view bytes);
// Returns nullopt if `s` contains a character outside the byte-level alphabet.
std::optional<std::string> byte_level_to_bytes(std::string_view s);

// Canonical composition (Unicode NFC) of valid UTF-8; invalid sequences pass through unchanged.
std::string nfc_normalize(std::string_view utf8);

}  // namespace distil::text
