// Building small byte-level BPE tokenizers: learning merges from a corpus and writing a
// Hugging Face tokenizer.json + tokenizer_config.json that `tokenizers`/transformers can load.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

#include "trainer/text/chat.h"
#include "trainer/text/chat_templates.h"
#include "trainer/text/tokenizer.h"

namespace distil::text {
namespace {

const char* chat_template_for(std::string_view format) {
  if (format == "chatml")
    return "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + "
           "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
           "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
           "{%- endif %}{%- endif %}";
  if (format == "llama3")
    return "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
           "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
           "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
  if (format == "olmo2" || format == "olmo") return kOlmo2ChatTemplate;
  return kPlainChatTemplate;
}

void write_json(const std::filesystem::path& path, const nlohmann::json& j) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j.dump(2) << '\n';
  if (!out) throw TokenizerError("cannot write " + path.string());
}

}  // namespace

void write_byte_level_tokenizer(const std::filesystem::path& dir, const ByteLevelTokenizerSpec& spec) {
  ChatFormat::from_name(spec.chat_format);  // validates the name
  // The llama3 template prepends bos_token to the first message: without one it cannot render.
  if (spec.chat_format == "llama3" && spec.bos_token.empty())
    throw TokenizerError("chat_format llama3 needs a bos_token (its template starts with it)");
  std::filesystem::create_directories(dir);
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  int32_t next_id = 0;
  for (int b = 0; b < 256; ++b) vocab[bytes_to_byte_level(std::string(1, static_cast<char>(b)))] = next_id++;
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [left, right] : spec.merges) {
    if (!vocab.contains(left) || !vocab.contains(right))
      throw TokenizerError("merge (\"" + left + "\", \"" + right + "\") uses a token not produced by earlier merges");
    merges.push_back(left + " " + right);
    if (!vocab.contains(left + right)) vocab[left + right] = next_id++;
  }
  nlohmann::json added = nlohmann::json::array();
  nlohmann::json added_decoder = nlohmann::json::object();
  for (const auto& special : spec.special_tokens) {
    if (special.empty()) throw TokenizerError("special token must not be empty");
    nlohmann::json entry = {{"id", next_id},      {"content", special}, {"single_word", false}, {"lstrip", false},
                            {"rstrip", false},    {"normalized", false}, {"special", true}};
    added_decoder[std::to_string(next_id)] = {{"content", special}, {"single_word", false}, {"lstrip", false},
                                              {"rstrip", false},    {"normalized", false},  {"special", true}};
    added.push_back(entry);
    ++next_id;
  }
  const std::string regex = spec.split_regex.empty() ? kQwenSplitRegex : spec.split_regex;
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  nlohmann::ordered_json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
          byte_level}}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
  write_json(dir / "tokenizer.json", tokenizer);

  const auto is_special = [&](const std::string& t) {
    return t.empty() || std::find(spec.special_tokens.begin(), spec.special_tokens.end(), t) != spec.special_tokens.end();
  };
  for (const auto* t : {&spec.eos_token, &spec.pad_token, &spec.bos_token})
    if (!is_special(*t)) throw TokenizerError("token \"" + *t + "\" must be one of special_tokens");
  const auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
  nlohmann::ordered_json config = {{"add_bos_token", false},
                                   {"add_prefix_space", false},
                                   {"added_tokens_decoder", added_decoder},
                                   {"bos_token", or_null(spec.bos_token)},
                                   {"chat_template", chat_template_for(spec.chat_format)},
                                   {"clean_up_tokenization_spaces", false},
                                   {"eos_token", or_null(spec.eos_token)},
                                   {"errors", "replace"},
                                   {"model_max_length", 131072},
                                   {"pad_token", or_null(spec.pad_token)},
                                   {"split_special_tokens", false},
                                   {"tokenizer_class", "PreTrainedTokenizerFast"},
                                   {"unk_token", nullptr}};
  write_json(dir / "tokenizer_config.json", config);
}

std::vector<std::pair<std::string, std::string>> learn_bpe_merges(std::span<const std::string> corpus, int num_merges,
                                                                  const std::string& split_regex) {
  // Word counts after the same pre-tokenization the tokenizer applies, as byte-level symbols.
  int error = 0;
  PCRE2_SIZE offset = 0;
  const std::string pattern = split_regex.empty() ? kQwenSplitRegex : split_regex;
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> code(
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr),
      &pcre2_code_free);
  if (!code) throw TokenizerError("split regex does not compile at offset " + std::to_string(offset));
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code.get(), nullptr), &pcre2_match_data_free);
  std::unordered_map<std::string, int64_t> word_counts;
  for (const auto& raw : corpus) {
    const std::string text = nfc_normalize(raw);
    size_t pos = 0;
    while (pos < text.size()) {
      const int rc = pcre2_match(code.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0,
                                 data.get(), nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
      if (ov[1] == ov[0]) {
        pos = ov[0] + 1;
        continue;
      }
      ++word_counts[text.substr(ov[0], ov[1] - ov[0])];
      pos = ov[1];
    }
  }
  std::vector<std::pair<std::vector<std::string>, int64_t>> words;
  words.reserve(word_counts.size());
  for (const auto& [w, c] : word_counts) {
    std::vector<std::string> symbols;
    for (unsigned char ch : w) symbols.push_back(bytes_to_byte_level(std::string(1, static_cast<char>(ch))));
    words.emplace_back(std::move(symbols), c);
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (int m = 0; m < num_merges; ++m) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;  // ordered: ties -> smallest pair
    for (const auto& [symbols, count] : words)
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += count;
    if (pairs.empty()) break;
    auto best = pairs.begin();
    for (auto it = pairs.begin(); it != pairs.end(); ++it)
      if (it->second > best->second) best = it;
    if (best->second < 2) break;
    const auto [left, right] = best->first;
    merges.emplace_back(left, right);
    for (auto& [symbols, count] : words) {
      std::vector<std::string> merged;
      merged.reserve(symbols.size());
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          merged.push_back(left + right);
          ++i;
        } else {
          merged.push_back(symbols[i]);
        }
      }
      symbols = std::move(merged);
    }
  }
  return merges;
}

}  // namespace distil::text
