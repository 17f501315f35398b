// Jinja chat templates, front end part 1: the preprocessing and lexing of @huggingface/jinja
// (src/lexer.ts): trim_blocks and lstrip_blocks as transformers sets them, whitespace control,
// JavaScript's notion of whitespace. Every error names the template line.
#include <algorithm>
#include <cstring>

#include "trainer/text/jinja_ast.h"

namespace distil::text::jinja {

// ---------------------------------------------------------------- whitespace (JavaScript's)

size_t js_whitespace_at(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) {
    return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
  };
  const unsigned c = byte(0);
  if (c == ' ' || (c >= 9 && c <= 13)) return 1;
  if (c == 0xC2 && byte(1) == 0xA0) return 2;                     // U+00A0
  if (c == 0xE1 && byte(1) == 0x9A && byte(2) == 0x80) return 3;  // U+1680
  if (c == 0xE2 && byte(1) == 0x80 &&
      (byte(2) <= 0x8A || byte(2) == 0xA8 || byte(2) == 0xA9 || byte(2) == 0xAF))
    return byte(2) >= 0x80 ? 3 : 0;                               // U+2000-200A, 2028, 2029, 202F
  if (c == 0xE2 && byte(1) == 0x81 && byte(2) == 0x9F) return 3;  // U+205F
  if (c == 0xE3 && byte(1) == 0x80 && byte(2) == 0x80) return 3;  // U+3000
  if (c == 0xEF && byte(1) == 0xBB && byte(2) == 0xBF) return 3;  // U+FEFF
  return 0;
}

std::string_view js_trim_start(std::string_view s) {
  size_t i = 0;
  while (size_t n = js_whitespace_at(s, i)) i += n;
  return s.substr(i);
}

std::string_view js_trim_end(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;  // the start of the last code point
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4)
      --start;
    if (js_whitespace_at(s, start) != end - start) break;
    end = start;
  }
  return s.substr(0, end);
}

namespace {

// ---------------------------------------------------------------- preprocessing

// The preprocessed text with, for each byte, its offset in the original (for line numbers).
struct Source {
  std::string text;
  std::vector<uint32_t> origin;
  void push(char c, uint32_t at) {
    text.push_back(c);
    origin.push_back(at);
  }
};

bool line_terminator_ends_at(const std::string& s,
                             size_t i) {  // does a JS line terminator end at i?
  if (i == 0) return false;
  if (s[i - 1] == '\n' || s[i - 1] == '\r') return true;
  return i >= 3 && static_cast<unsigned char>(s[i - 3]) == 0xE2 &&
         static_cast<unsigned char>(s[i - 2]) == 0x80 &&
         (static_cast<unsigned char>(s[i - 1]) == 0xA8 ||
          static_cast<unsigned char>(s[i - 1]) == 0xA9);
}

Source preprocess(std::string_view original) {
  Source in;
  for (size_t i = 0; i < original.size(); ++i) in.push(original[i], static_cast<uint32_t>(i));
  if (!in.text.empty() && in.text.back() == '\n') in.text.pop_back(), in.origin.pop_back();

  // lstrip_blocks: /^[ \t]*({[#%-])/gm -> "$1"
  Source stripped;
  for (size_t i = 0; i < in.text.size();) {
    if (i == 0 || line_terminator_ends_at(in.text, i)) {
      size_t j = i;
      while (j < in.text.size() && (in.text[j] == ' ' || in.text[j] == '\t')) ++j;
      if (j + 1 < in.text.size() && in.text[j] == '{' && std::strchr("#%-", in.text[j + 1]) &&
          in.text[j + 1]) {
        for (size_t k = j; k < j + 2; ++k) stripped.push(in.text[k], in.origin[k]);
        i = j + 2;
        continue;
      }
    }
    stripped.push(in.text[i], in.origin[i]);
    ++i;
  }

  // trim_blocks: /([#%-]})\n/g -> "$1"
  Source trimmed;
  for (size_t i = 0; i < stripped.text.size();) {
    const std::string& t = stripped.text;
    if (i + 2 < t.size() && (t[i] == '#' || t[i] == '%' || t[i] == '-') && t[i + 1] == '}' &&
        t[i + 2] == '\n') {
      trimmed.push(t[i], stripped.origin[i]);
      trimmed.push(t[i + 1], stripped.origin[i + 1]);
      i += 3;
      continue;
    }
    trimmed.push(t[i], stripped.origin[i]);
    ++i;
  }

  // transformers' {% generation %} / {% endgeneration %} tags are removed, honouring - markers:
  // /{%(-?)\s*(?:end)?generation\s*(-?)%}(\s*)/gs
  Source out;
  const std::string& t = trimmed.text;
  size_t last = 0;  // start of the text not yet copied
  const auto copy = [&](size_t from, size_t to) {
    for (size_t k = from; k < to; ++k) out.push(t[k], trimmed.origin[k]);
  };
  const auto skip_ws = [&](size_t k) {
    while (size_t n = js_whitespace_at(t, k)) k += n;
    return k;
  };
  for (size_t at = t.find("{%"); at != std::string::npos; at = t.find("{%", at + 1)) {
    size_t k = at + 2;
    const bool lstrip = k < t.size() && t[k] == '-';
    if (lstrip) ++k;
    k = skip_ws(k);
    if (t.compare(k, 3, "end") == 0 && t.compare(k + 3, 10, "generation") == 0) k += 3;
    if (t.compare(k, 10, "generation") != 0) continue;
    k = skip_ws(k + 10);
    const bool rstrip = k < t.size() && t[k] == '-';
    if (rstrip) ++k;
    if (t.compare(k, 2, "%}") != 0) continue;
    k += 2;
    const size_t after_start = k, after_end = skip_ws(k);
    const size_t end =
        lstrip ? last + js_trim_end(std::string_view(t).substr(last, at - last)).size() : at;
    copy(last, end);
    if (!rstrip) copy(after_start, after_end);
    last = after_end;
    at = after_end - 1;
  }
  copy(last, t.size());
  return out;
}

// ---------------------------------------------------------------- lexer

class Lexer {
 public:
  Lexer(const Source& src, std::string_view original) : src_(src.text), origin_(src.origin) {
    for (size_t i = 0; i < original.size(); ++i)
      if (original[i] == '\n') newlines_.push_back(static_cast<uint32_t>(i));
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) step();
    return std::move(tokens_);
  }

 private:
  int line_at(size_t pos) const {
    const uint32_t at =
        pos < origin_.size() ? origin_[pos] : (origin_.empty() ? 0 : origin_.back());
    return 1 + static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), at) -
                                newlines_.begin());
  }
  void push(Tok type, std::string value, size_t at) {
    tokens_.push_back({type, std::move(value), line_at(at)});
  }
  bool last_is(std::initializer_list<Tok> types) const {
    if (tokens_.empty()) return false;
    return std::find(types.begin(), types.end(), tokens_.back().type) != types.end();
  }
  char at(size_t i) const { return i < src_.size() ? src_[i] : '\0'; }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_word(char c) {
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  }

  void strip_trailing_whitespace() {  // {%- {{- {#-
    if (!tokens_.empty() && tokens_.back().type == Tok::Text) {
      tokens_.back().value = std::string(js_trim_end(tokens_.back().value));
      if (tokens_.back().value.empty()) tokens_.pop_back();
    }
  }
  void skip_leading_whitespace() {  // -%} -}} -#}
    while (size_t n = js_whitespace_at(src_, pos_)) pos_ += n;
  }

  std::string read_string(char quote) {
    const size_t start = pos_;
    std::string out;
    while (true) {
      if (pos_ >= src_.size()) fail(line_at(start), "unterminated string literal");
      const char c = src_[pos_++];
      if (c == quote) return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= src_.size()) fail(line_at(start), "unterminated string literal");
      const char e = src_[pos_++];
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\'':
        case '"':
        case '\\':
          out += e;
          break;
        case 'x':
        case 'u': {
          const size_t len = e == 'x' ? 2 : 4;
          const std::string hex = src_.substr(pos_, len);
          if (hex.size() != len ||
              hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
            fail(line_at(pos_), "invalid escape \\" + std::string(1, e) + hex);
          pos_ += len;
          uint32_t cp = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
          if (cp >= 0xD800 && cp <= 0xDBFF && at(pos_) == '\\' &&
              at(pos_ + 1) == 'u') {  // a surrogate pair
            const std::string low = src_.substr(pos_ + 2, 4);
            if (low.size() == 4 &&
                low.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
              const uint32_t lo = static_cast<uint32_t>(std::stoul(low, nullptr, 16));
              if (lo >= 0xDC00 && lo <= 0xDFFF)
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), pos_ += 6;
            }
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // a lone surrogate has no UTF-8 form
          append_utf8(out, cp);
          break;
        }
        default:
          fail(line_at(pos_ - 1), std::string("unknown escape \\") + e + " in a string literal");
      }
    }
  }
  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::string read_digits() {
    const size_t start = pos_;
    while (is_digit(at(pos_))) ++pos_;
    return src_.substr(start, pos_ - start);
  }

  void step() {
    // Text between tags.
    if (tokens_.empty() || last_is({Tok::CloseStatement, Tok::CloseExpression, Tok::Comment})) {
      size_t end = pos_;
      while (true) {
        end = src_.find('{', end);
        if (end == std::string::npos) {
          end = src_.size();
          break;
        }
        const char next = at(end + 1);
        if (next == '%' || next == '{' || next == '#') break;
        ++end;
      }
      if (end > pos_) {
        push(Tok::Text, src_.substr(pos_, end - pos_), pos_);
        pos_ = end;
        return;
      }
    }
    if (at(pos_) == '{') {
      const char next = at(pos_ + 1);
      if (next == '#') {
        const size_t start = pos_;
        pos_ += 2;
        const bool strip_before = at(pos_) == '-';
        if (strip_before) ++pos_;
        const size_t end = src_.find("#}", pos_);
        if (end == std::string::npos) fail(line_at(start), "comment {# is never closed with #}");
        std::string comment = src_.substr(pos_, end - pos_);
        const bool strip_after = !comment.empty() && comment.back() == '-';
        if (strip_before) strip_trailing_whitespace();
        push(Tok::Comment, std::move(comment), start);
        pos_ = end + 2;
        if (strip_after) skip_leading_whitespace();
        return;
      }
      if (at(pos_ + 2) == '-' && (next == '%' || next == '{')) {
        strip_trailing_whitespace();
        push(next == '%' ? Tok::OpenStatement : Tok::OpenExpression, next == '%' ? "{%" : "{{",
             pos_);
        if (next == '{') curly_depth_ = 0;
        pos_ += 3;
        return;
      }
    }
    // Whitespace inside a tag.
    while (size_t n = js_whitespace_at(src_, pos_)) {
      pos_ += n;
      if (pos_ >= src_.size()) fail(line_at(pos_), "the template ends inside a tag");
    }
    const char c = at(pos_);
    if (c == '-' && at(pos_ + 2) == '}' && (at(pos_ + 1) == '%' || at(pos_ + 1) == '}')) {
      push(at(pos_ + 1) == '%' ? Tok::CloseStatement : Tok::CloseExpression,
           at(pos_ + 1) == '%' ? "%}" : "}}", pos_);
      pos_ += 3;
      skip_leading_whitespace();
      return;
    }
    if (c == '-' || c == '+') {
      if (tokens_.empty() || last_is({Tok::Text}))
        fail(line_at(pos_), std::string("unexpected '") + c + "'");
      if (!last_is({Tok::Ident, Tok::Number, Tok::String, Tok::CloseParen, Tok::CloseSquare})) {
        const size_t start = pos_++;
        std::string num = read_digits();
        if (!num.empty() && at(pos_) == '.' && is_digit(at(pos_ + 1))) {
          ++pos_;
          num += "." + read_digits();
        }
        push(num.empty() ? Tok::Unary : Tok::Number, std::string(1, c) + num, start);
        return;
      }
    }
    static const std::pair<const char*, Tok> kRules[] = {
        {"{%", Tok::OpenStatement},  {"%}", Tok::CloseStatement},
        {"{{", Tok::OpenExpression}, {"}}", Tok::CloseExpression},
        {"(", Tok::OpenParen},       {")", Tok::CloseParen},
        {"{", Tok::OpenCurly},       {"}", Tok::CloseCurly},
        {"[", Tok::OpenSquare},      {"]", Tok::CloseSquare},
        {",", Tok::Comma},           {".", Tok::Dot},
        {":", Tok::Colon},           {"|", Tok::Pipe},
        {"<=", Tok::Comparison},     {">=", Tok::Comparison},
        {"==", Tok::Comparison},     {"!=", Tok::Comparison},
        {"<", Tok::Comparison},      {">", Tok::Comparison},
        {"+", Tok::Additive},        {"-", Tok::Additive},
        {"~", Tok::Additive},        {"**", Tok::Power},
        {"*", Tok::Multiplicative},  {"//", Tok::Multiplicative},
        {"/", Tok::Multiplicative},  {"%", Tok::Multiplicative},
        {"=", Tok::Equals}};
    for (const auto& [seq, type] : kRules) {
      if (type == Tok::CloseExpression && curly_depth_ > 0)
        continue;  // "}}" closing an object literal
      const size_t len = std::strlen(seq);
      if (src_.compare(pos_, len, seq) != 0) continue;
      push(type, seq, pos_);
      if (type == Tok::OpenExpression) curly_depth_ = 0;
      if (type == Tok::OpenCurly) ++curly_depth_;
      if (type == Tok::CloseCurly) --curly_depth_;
      pos_ += len;
      return;
    }
    if (c == '\'' || c == '"') {
      const size_t start = pos_++;
      std::string s = read_string(c);
      push(Tok::String, std::move(s), start);
      return;
    }
    if (is_digit(c)) {
      const size_t start = pos_;
      std::string num = read_digits();
      if (!last_is({Tok::Dot}) && at(pos_) == '.' && is_digit(at(pos_ + 1))) {
        ++pos_;
        num += "." + read_digits();
      }
      push(Tok::Number, std::move(num), start);
      return;
    }
    if (is_word(c)) {
      const size_t start = pos_;
      while (is_word(at(pos_))) ++pos_;
      push(Tok::Ident, src_.substr(start, pos_ - start), start);
      return;
    }
    fail(line_at(pos_), "unexpected character '" + std::string(1, c) + "' inside a tag");
  }

  const std::string& src_;
  const std::vector<uint32_t>& origin_;
  std::vector<uint32_t> newlines_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  if (source.size() > (size_t{1} << 30)) throw Error("chat template is larger than 1 GiB");
  const Source pre = preprocess(source);
  return Lexer(pre, source).run();
}

}  // namespace distil::text::jinja
