// Byte-level BPE tokenizer from a Hugging Face tokenizer.json.
// Pipeline (as the HF `tokenizers` library runs it): split off added tokens (leftmost, longest
// first) -> NFC on the remaining text -> pre-tokenizer splits (regex, ByteLevel) -> BPE per
// piece, merging the lowest-ranked adjacent pair first (leftmost on ties) -> ids.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "trainer/text/tokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "trainer/text/unicode.h"

namespace distil::text {

const char* const kQwenSplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2SplitRegex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

constexpr int32_t kMaxVocab = 4 * 1024 * 1024;  // bounds what a hostile file can make us allocate

class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw TokenizerError("pre_tokenizer regex does not compile at offset " + std::to_string(offset) + ": " +
                           reinterpret_cast<const char*>(message));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_piece(begin, end, matched) for matches and the gaps between them, in order.
  template <typename F>
  void split(std::string_view s, F&& on_piece) const {
    thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create(16, nullptr), &pcre2_match_data_free);
    size_t last = 0, offset = 0;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    while (offset <= s.size()) {
      int rc = jit_ ? pcre2_jit_match(code_, subject, s.size(), offset, 0, data.get(), nullptr)
                    : pcre2_match(code_, subject, s.size(), offset, 0, data.get(), nullptr);
      // The JIT's fixed stack can run out on pathological input; the interpreter uses the heap.
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) rc = pcre2_match(code_, subject, s.size(), offset, 0, data.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) throw TokenizerError("pre_tokenizer regex failed with PCRE2 error " + std::to_string(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
      const size_t begin = ov[0], end = ov[1];
      if (end == begin) {  // empty match: step over one character
        offset = begin + 1;
        while (offset < s.size() && (static_cast<unsigned char>(s[offset]) & 0xC0) == 0x80) ++offset;
        continue;
      }
      if (begin > last) on_piece(last, begin, false);
      on_piece(begin, end, true);
      last = offset = end;
    }
    if (last < s.size()) on_piece(last, s.size(), false);
  }

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

struct PreTokenizerStep {
  std::shared_ptr<Regex> regex;  // null = no splitting
  bool remove_matches = false;
  bool add_prefix_space = false;
};

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false, lstrip = false, rstrip = false;
};

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TokenizerError("cannot open " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw TokenizerError(path.string() + ": invalid JSON: " + e.what());
  }
}

std::optional<std::string> token_content(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return std::nullopt;
}

bool is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> token_strings;  // vocabulary form per id ("" for holes)
  std::vector<std::string> token_bytes;    // raw bytes per id
  std::vector<uint8_t> special;
  std::unordered_map<std::string, int32_t> string_to_id;
  std::unordered_map<std::string, int32_t> bytes_to_id;
  std::array<int32_t, 256> byte_ids{};
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left,right) -> (rank, merged)
  bool byte_level = false, ignore_merges = false, byte_fallback = false, nfc = false;
  std::optional<int32_t> unk_id;
  std::vector<PreTokenizerStep> steps;
  std::vector<AddedToken> added;  // longest content first
  std::vector<int32_t> eos_ids;
  std::optional<int32_t> pad_id, bos_id;
  std::string chat_template;
  std::vector<std::pair<std::string, std::string>> special_token_texts;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges) {
    if (auto it = bytes_to_id.find(std::string(piece)); it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= 64;
  if (cacheable) {
    std::lock_guard lock(cache_mutex);
    if (auto it = cache.find(std::string(piece)); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  const auto push = [&](int32_t id) {
    const int32_t i = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, i - 1, i + 1});
  };
  if (byte_level) {
    for (unsigned char c : piece) push(byte_ids[c]);
  } else {
    for (size_t i = 0; i < piece.size();) {
      char32_t cp;
      size_t n = utf8_decode_one(piece, i, cp);
      if (!n) n = 1;
      if (auto it = bytes_to_id.find(std::string(piece.substr(i, n))); it != bytes_to_id.end()) {
        push(it->second);
      } else if (byte_fallback) {
        for (size_t k = 0; k < n; ++k) {
          char name[8];
          std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned char>(piece[i + k]));
          auto b = string_to_id.find(name);
          if (b == string_to_id.end()) throw TokenizerError(std::string("byte_fallback token ") + name + " missing");
          push(b->second);
        }
      } else if (unk_id) {
        push(*unk_id);
      } else {
        throw TokenizerError("text contains a character with no token and the model has no unk_token");
      }
      i += n;
    }
  }
  if (!symbols.empty()) symbols.back().next = -1;

  struct Candidate {
    int32_t rank, left, left_id, right_id, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(symbols[left].id)) << 32) |
                         static_cast<uint32_t>(symbols[right].id);
    if (auto it = merges.find(key); it != merges.end())
      queue.push({it->second.first, left, symbols[left].id, symbols[right].id, it->second.second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;  // stale
    const int32_t right = left.next;
    left.id = c.merged;
    left.next = symbols[right].next;
    if (left.next >= 0) symbols[left.next].prev = c.left;
    symbols[right].id = -1;  // dead
    consider(left.prev);
    consider(c.left);
  }
  const size_t start = out.size();
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
  if (cacheable) {
    std::lock_guard lock(cache_mutex);
    if (cache.size() > 200000) cache.clear();
    cache.emplace(std::string(piece), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

void Tokenizer::Impl::encode_text(std::string_view raw, std::vector<int32_t>& out) const {
  if (raw.empty()) return;
  const std::string text = nfc ? nfc_normalize(raw) : std::string(raw);
  std::vector<std::string> pieces{text};
  for (const auto& step : steps) {
    std::vector<std::string> next;
    for (auto& piece : pieces) {
      if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) piece.insert(piece.begin(), ' ');
      if (!step.regex) {
        next.push_back(std::move(piece));
        continue;
      }
      step.regex->split(piece, [&](size_t b, size_t e, bool matched) {
        if (!(matched && step.remove_matches)) next.emplace_back(piece.substr(b, e - b));
      });
    }
    pieces = std::move(next);
  }
  for (const auto& piece : pieces) bpe(piece, out);
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  try {
    return from_json(read_json_file(path));
  } catch (const TokenizerError& e) {
    throw TokenizerError(path.string() + ": " + e.what());
  }
}

Tokenizer Tokenizer::from_json(const nlohmann::json& j) {
  auto impl = std::make_shared<Impl>();
  if (!j.is_object()) throw TokenizerError("tokenizer.json must be an object");
  if (!j.contains("model") || !j["model"].is_object()) throw TokenizerError("missing object \"model\"");
  const auto& model = j["model"];
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") throw TokenizerError("model.type \"" + type + "\" is not supported (only BPE)");
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw TokenizerError("model.vocab must be an object");

  // Pre-tokenizers and decoder decide whether tokens are byte-level strings.
  const auto add_step = [&](const nlohmann::json& p, auto& self) -> void {
    if (!p.is_object()) throw TokenizerError("pre_tokenizer entries must be objects");
    const std::string ptype = p.value("type", "");
    if (ptype == "Sequence") {
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array())
        throw TokenizerError("pre_tokenizer Sequence needs an array \"pretokenizers\"");
      for (const auto& q : p["pretokenizers"]) self(q, self);
    } else if (ptype == "Split") {
      const auto& pattern = p.value("pattern", nlohmann::json::object());
      std::string regex;
      if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
        regex = pattern["Regex"].get<std::string>();
      } else if (pattern.contains("String") && pattern["String"].is_string()) {
        for (char c : pattern["String"].get<std::string>()) {  // quote literally
          if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) regex += '\\';
          regex += c;
        }
      } else {
        throw TokenizerError("pre_tokenizer Split needs pattern.Regex or pattern.String");
      }
      if (p.value("invert", false)) throw TokenizerError("pre_tokenizer Split with invert=true is not supported");
      const std::string behavior = p.value("behavior", "Isolated");
      if (behavior != "Isolated" && behavior != "Removed")
        throw TokenizerError("pre_tokenizer Split behavior \"" + behavior + "\" is not supported");
      impl->steps.push_back({std::make_shared<Regex>(regex), behavior == "Removed", false});
    } else if (ptype == "ByteLevel") {
      impl->byte_level = true;
      PreTokenizerStep step;
      step.add_prefix_space = p.value("add_prefix_space", false);
      if (p.value("use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2SplitRegex);
      impl->steps.push_back(step);
    } else {
      throw TokenizerError("pre_tokenizer type \"" + ptype + "\" is not supported");
    }
  };
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) add_step(j["pre_tokenizer"], add_step);
  if (j.contains("decoder") && j["decoder"].is_object() && j["decoder"].value("type", "") == "ByteLevel")
    impl->byte_level = true;
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const auto& n = j["normalizer"];
    const std::string ntype = n.is_object() ? n.value("type", "") : "";
    if (ntype == "NFC") {
      impl->nfc = true;
    } else if (ntype == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array() &&
               n["normalizers"].empty()) {
    } else {
      throw TokenizerError("normalizer \"" + ntype + "\" is not supported (only NFC)");
    }
  }
  impl->ignore_merges = model.value("ignore_merges", false);
  impl->byte_fallback = model.value("byte_fallback", false);

  int32_t max_id = -1;
  const auto set_token = [&](const std::string& s, int64_t id, bool from_vocab) {
    if (id < 0 || id >= kMaxVocab) throw TokenizerError("token \"" + s + "\" has invalid id " + std::to_string(id));
    const auto i = static_cast<int32_t>(id);
    if (i >= static_cast<int32_t>(impl->token_strings.size())) {
      impl->token_strings.resize(i + 1);
      impl->token_bytes.resize(i + 1);
      impl->special.resize(i + 1, 0);
    }
    impl->token_strings[i] = s;
    std::string bytes = s;
    if (from_vocab && impl->byte_level) {
      auto decoded = byte_level_to_bytes(s);
      if (decoded) bytes = std::move(*decoded);
    }
    impl->token_bytes[i] = bytes;
    impl->string_to_id[s] = i;
    if (from_vocab) impl->bytes_to_id.emplace(std::move(bytes), i);
    max_id = std::max(max_id, i);
  };
  for (const auto& [s, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) throw TokenizerError("model.vocab[\"" + s + "\"] must be an integer id");
    set_token(s, id.get<int64_t>(), true);
  }
  if (impl->byte_level) {
    for (int b = 0; b < 256; ++b) {
      const std::string key(1, static_cast<char>(b));
      auto it = impl->bytes_to_id.find(key);
      if (it == impl->bytes_to_id.end())
        throw TokenizerError("byte-level vocabulary lacks the token for byte " + std::to_string(b));
      impl->byte_ids[b] = it->second;
    }
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = impl->string_to_id.find(model["unk_token"].get<std::string>());
    if (it == impl->string_to_id.end()) throw TokenizerError("model.unk_token is not in the vocabulary");
    impl->unk_id = it->second;
  }
  if (model.contains("merges")) {
    if (!model["merges"].is_array()) throw TokenizerError("model.merges must be an array");
    int32_t rank = 0;
    for (const auto& m : model["merges"]) {
      std::string left, right;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos) throw TokenizerError("model.merges[" + std::to_string(rank) + "] lacks a space");
        left = s.substr(0, space), right = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>(), right = m[1].get<std::string>();
      } else {
        throw TokenizerError("model.merges[" + std::to_string(rank) + "] must be \"a b\" or [\"a\", \"b\"]");
      }
      const auto l = impl->string_to_id.find(left), r = impl->string_to_id.find(right),
                 merged = impl->string_to_id.find(left + right);
      if (l == impl->string_to_id.end() || r == impl->string_to_id.end() || merged == impl->string_to_id.end())
        throw TokenizerError("model.merges[" + std::to_string(rank) + "] (\"" + left + "\", \"" + right +
                             "\") uses a token missing from the vocabulary");
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l->second)) << 32) |
                           static_cast<uint32_t>(r->second);
      impl->merges.emplace(key, std::pair{rank, merged->second});
      ++rank;
    }
  }
  if (j.contains("added_tokens")) {
    if (!j["added_tokens"].is_array()) throw TokenizerError("added_tokens must be an array");
    for (const auto& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        throw TokenizerError("added_tokens entries need an integer \"id\" and a string \"content\"");
      AddedToken t;
      t.content = a["content"].get<std::string>();
      if (t.content.empty()) throw TokenizerError("added_tokens entry with empty content");
      t.id = static_cast<int32_t>(std::clamp<int64_t>(a["id"].get<int64_t>(), -1, kMaxVocab));
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      set_token(t.content, a["id"].get<int64_t>(), false);
      impl->special[t.id] = t.special;
      impl->added.push_back(std::move(t));
    }
  }
  std::stable_sort(impl->added.begin(), impl->added.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  if (max_id < 0) throw TokenizerError("the vocabulary is empty");
  Tokenizer tokenizer;
  tokenizer.impl_ = std::move(impl);
  return tokenizer;
}

Tokenizer Tokenizer::from_model_dir(const std::filesystem::path& dir) {
  Tokenizer t = from_file(dir / "tokenizer.json");
  Impl& impl = *t.impl_;
  const auto config_path = dir / "tokenizer_config.json";
  const auto lookup = [&](const nlohmann::json& j, const char* field) -> std::optional<int32_t> {
    if (!j.contains(field) || j[field].is_null()) return std::nullopt;
    auto content = token_content(j[field]);
    if (!content) throw TokenizerError(config_path.string() + ": \"" + field + "\" must be a string or {content}");
    auto id = t.token_to_id(*content);
    if (!id) throw TokenizerError(config_path.string() + ": " + field + " \"" + *content + "\" is not a token");
    return id;
  };
  if (std::filesystem::exists(config_path)) {
    const auto config = read_json_file(config_path);
    if (!config.is_object()) throw TokenizerError(config_path.string() + " must be an object");
    if (auto eos = lookup(config, "eos_token")) impl.eos_ids.push_back(*eos);
    impl.pad_id = lookup(config, "pad_token");
    impl.bos_id = lookup(config, "bos_token");
    for (const char* field : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      if (!config.contains(field) || config[field].is_null()) continue;
      auto content = token_content(config[field]);
      if (!content) throw TokenizerError(config_path.string() + ": \"" + field + "\" must be a string or {content}");
      if (!content->empty()) impl.special_token_texts.emplace_back(field, *content);
    }
    if (config.contains("chat_template") && !config["chat_template"].is_null()) {
      const auto& tpl = config["chat_template"];
      if (tpl.is_string()) {
        impl.chat_template = tpl.get<std::string>();
      } else if (tpl.is_array()) {  // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        bool found = false;
        for (const auto& entry : tpl) {
          if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() || !entry.contains("template") ||
              !entry["template"].is_string())
            throw TokenizerError(config_path.string() + ": chat_template list entries need string \"name\" and \"template\"");
          if (entry["name"] == "default") impl.chat_template = entry["template"].get<std::string>(), found = true;
        }
        if (!found) throw TokenizerError(config_path.string() + ": chat_template list has no template named \"default\"");
      } else {
        throw TokenizerError(config_path.string() + ": chat_template must be a string or a list of {name, template}");
      }
    }
  }
  // Newer transformers save the template beside the config; it takes precedence there too.
  if (const auto jinja_path = dir / "chat_template.jinja"; std::filesystem::exists(jinja_path)) {
    std::ifstream in(jinja_path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in && !in.eof()) throw TokenizerError("cannot read " + jinja_path.string());
    impl.chat_template = std::move(text);
  }
  const auto generation_path = dir / "generation_config.json";
  if (std::filesystem::exists(generation_path)) {
    const auto gen = read_json_file(generation_path);
    if (gen.is_object() && gen.contains("eos_token_id")) {
      const auto add = [&](const nlohmann::json& v) {
        if (!v.is_number_integer()) throw TokenizerError(generation_path.string() + ": eos_token_id must be integers");
        const auto id = v.get<int64_t>();
        if (id < 0 || id >= t.vocab_size()) throw TokenizerError(generation_path.string() + ": eos_token_id out of range");
        if (std::find(impl.eos_ids.begin(), impl.eos_ids.end(), id) == impl.eos_ids.end())
          impl.eos_ids.push_back(static_cast<int32_t>(id));
      };
      if (gen["eos_token_id"].is_array()) {
        for (const auto& v : gen["eos_token_id"]) add(v);
      } else {
        add(gen["eos_token_id"]);
      }
    }
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  const Impl& impl = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  // Next occurrence of each usable added token at or after the scan position (npos = none left).
  std::vector<size_t> next(impl.added.size(), std::string_view::npos);
  for (size_t k = 0; k < impl.added.size(); ++k)
    if (allow_special || !impl.added[k].special) next[k] = text.find(impl.added[k].content);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = std::string_view::npos, best_k = 0;
    for (size_t k = 0; k < impl.added.size(); ++k) {
      if (next[k] != std::string_view::npos && next[k] < pos) next[k] = text.find(impl.added[k].content, pos);
      if (next[k] < best) best = next[k], best_k = k;  // sorted longest first: ties keep the longest
    }
    if (best == std::string_view::npos) break;
    const AddedToken& token = impl.added[best_k];
    size_t text_end = best, after = best + token.content.size();
    if (token.lstrip)
      while (text_end > pos && is_space_byte(text[text_end - 1])) --text_end;
    if (token.rstrip)
      while (after < text.size() && is_space_byte(text[after])) ++after;
    impl.encode_text(text.substr(pos, text_end - pos), out);
    out.push_back(token.id);
    pos = after;
  }
  if (pos < text.size()) impl.encode_text(text.substr(pos), out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(impl_->token_bytes.size())) continue;
    if (skip_special && impl_->special[id]) continue;
    bytes += impl_->token_bytes[id];
  }
  return utf8_replace_invalid(bytes);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(impl_->token_bytes.size())) return {};
  return impl_->token_bytes[id];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->string_to_id.find(std::string(token));
  if (it == impl_->string_to_id.end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(impl_->token_strings.size()))
    throw TokenizerError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                         std::to_string(impl_->token_strings.size()) + ")");
  return impl_->token_strings[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->token_strings.size()); }
bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(impl_->special.size()) && impl_->special[id];
}
const std::vector<int32_t>& Tokenizer::eos_token_ids() const { return impl_->eos_ids; }
std::optional<int32_t> Tokenizer::pad_token_id() const { return impl_->pad_id; }
std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
const std::vector<std::pair<std::string, std::string>>& Tokenizer::special_token_texts() const {
  return impl_->special_token_texts;
}
void Tokenizer::set_eos_token_ids(std::vector<int32_t> ids) { impl_->eos_ids = std::move(ids); }
void Tokenizer::set_pad_token_id(std::optional<int32_t> id) { impl_->pad_id = id; }

}  // namespace distil::text
