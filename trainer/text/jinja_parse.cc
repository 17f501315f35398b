// Jinja chat templates, front end: the preprocessing, lexing and parsing of @huggingface/jinja
// (src/lexer.ts, src/parser.ts), including its operator precedence, which differs from Python
// Jinja in places (e.g. `is` binds tighter than `+`). Every error names the template line.
#include <algorithm>
#include <cstring>

#include "trainer/text/jinja_ast.h"

namespace distil::text::jinja {

// ---------------------------------------------------------------- whitespace (JavaScript's)

size_t js_whitespace_at(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  const unsigned c = byte(0);
  if (c == ' ' || (c >= 9 && c <= 13)) return 1;
  if (c == 0xC2 && byte(1) == 0xA0) return 2;                                  // U+00A0
  if (c == 0xE1 && byte(1) == 0x9A && byte(2) == 0x80) return 3;               // U+1680
  if (c == 0xE2 && byte(1) == 0x80 && (byte(2) <= 0x8A || byte(2) == 0xA8 || byte(2) == 0xA9 || byte(2) == 0xAF))
    return byte(2) >= 0x80 ? 3 : 0;                                            // U+2000-200A, 2028, 2029, 202F
  if (c == 0xE2 && byte(1) == 0x81 && byte(2) == 0x9F) return 3;               // U+205F
  if (c == 0xE3 && byte(1) == 0x80 && byte(2) == 0x80) return 3;               // U+3000
  if (c == 0xEF && byte(1) == 0xBB && byte(2) == 0xBF) return 3;               // U+FEFF
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
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4) --start;
    if (js_whitespace_at(s, start) != end - start) break;
    end = start;
  }
  return s.substr(0, end);
}

namespace {

[[noreturn]] void syntax_error(int line, const std::string& what) {
  throw Error("chat template line " + std::to_string(line) + ": " + what);
}

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

bool line_terminator_ends_at(const std::string& s, size_t i) {  // does a JS line terminator end at i?
  if (i == 0) return false;
  if (s[i - 1] == '\n' || s[i - 1] == '\r') return true;
  return i >= 3 && static_cast<unsigned char>(s[i - 3]) == 0xE2 && static_cast<unsigned char>(s[i - 2]) == 0x80 &&
         (static_cast<unsigned char>(s[i - 1]) == 0xA8 || static_cast<unsigned char>(s[i - 1]) == 0xA9);
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
      if (j + 1 < in.text.size() && in.text[j] == '{' && std::strchr("#%-", in.text[j + 1]) && in.text[j + 1]) {
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
    if (i + 2 < t.size() && (t[i] == '#' || t[i] == '%' || t[i] == '-') && t[i + 1] == '}' && t[i + 2] == '\n') {
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
    const size_t end = lstrip ? last + js_trim_end(std::string_view(t).substr(last, at - last)).size() : at;
    copy(last, end);
    if (!rstrip) copy(after_start, after_end);
    last = after_end;
    at = after_end - 1;
  }
  copy(last, t.size());
  return out;
}

// ---------------------------------------------------------------- lexer

enum class Tok {
  Text, Number, String, Ident, Equals, OpenParen, CloseParen, OpenStatement, CloseStatement, OpenExpression,
  CloseExpression, OpenSquare, CloseSquare, OpenCurly, CloseCurly, Comma, Dot, Colon, Pipe, Additive,
  Multiplicative, Power, Comparison, Unary, Comment
};

struct Token {
  Tok type;
  std::string value;
  int line;
};

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
    const uint32_t at = pos < origin_.size() ? origin_[pos] : (origin_.empty() ? 0 : origin_.back());
    return 1 + static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), at) - newlines_.begin());
  }
  void push(Tok type, std::string value, size_t at) { tokens_.push_back({type, std::move(value), line_at(at)}); }
  bool last_is(std::initializer_list<Tok> types) const {
    if (tokens_.empty()) return false;
    return std::find(types.begin(), types.end(), tokens_.back().type) != types.end();
  }
  char at(size_t i) const { return i < src_.size() ? src_[i] : '\0'; }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static bool is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

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
      if (pos_ >= src_.size()) syntax_error(line_at(start), "unterminated string literal");
      const char c = src_[pos_++];
      if (c == quote) return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= src_.size()) syntax_error(line_at(start), "unterminated string literal");
      const char e = src_[pos_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\'': case '"': case '\\': out += e; break;
        case 'x': case 'u': {
          const size_t len = e == 'x' ? 2 : 4;
          const std::string hex = src_.substr(pos_, len);
          if (hex.size() != len || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
            syntax_error(line_at(pos_), "invalid escape \\" + std::string(1, e) + hex);
          pos_ += len;
          uint32_t cp = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
          if (cp >= 0xD800 && cp <= 0xDBFF && at(pos_) == '\\' && at(pos_ + 1) == 'u') {  // a surrogate pair
            const std::string low = src_.substr(pos_ + 2, 4);
            if (low.size() == 4 && low.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
              const uint32_t lo = static_cast<uint32_t>(std::stoul(low, nullptr, 16));
              if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), pos_ += 6;
            }
          }
          if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;  // a lone surrogate has no UTF-8 form
          append_utf8(out, cp);
          break;
        }
        default: syntax_error(line_at(pos_ - 1), std::string("unknown escape \\") + e + " in a string literal");
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
        if (end == std::string::npos) syntax_error(line_at(start), "comment {# is never closed with #}");
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
        push(next == '%' ? Tok::OpenStatement : Tok::OpenExpression, next == '%' ? "{%" : "{{", pos_);
        if (next == '{') curly_depth_ = 0;
        pos_ += 3;
        return;
      }
    }
    // Whitespace inside a tag.
    while (size_t n = js_whitespace_at(src_, pos_)) {
      pos_ += n;
      if (pos_ >= src_.size()) syntax_error(line_at(pos_), "the template ends inside a tag");
    }
    const char c = at(pos_);
    if (c == '-' && at(pos_ + 2) == '}' && (at(pos_ + 1) == '%' || at(pos_ + 1) == '}')) {
      push(at(pos_ + 1) == '%' ? Tok::CloseStatement : Tok::CloseExpression, at(pos_ + 1) == '%' ? "%}" : "}}", pos_);
      pos_ += 3;
      skip_leading_whitespace();
      return;
    }
    if (c == '-' || c == '+') {
      if (tokens_.empty() || last_is({Tok::Text})) syntax_error(line_at(pos_), std::string("unexpected '") + c + "'");
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
        {"{%", Tok::OpenStatement}, {"%}", Tok::CloseStatement}, {"{{", Tok::OpenExpression},
        {"}}", Tok::CloseExpression}, {"(", Tok::OpenParen}, {")", Tok::CloseParen}, {"{", Tok::OpenCurly},
        {"}", Tok::CloseCurly}, {"[", Tok::OpenSquare}, {"]", Tok::CloseSquare}, {",", Tok::Comma}, {".", Tok::Dot},
        {":", Tok::Colon}, {"|", Tok::Pipe}, {"<=", Tok::Comparison}, {">=", Tok::Comparison},
        {"==", Tok::Comparison}, {"!=", Tok::Comparison}, {"<", Tok::Comparison}, {">", Tok::Comparison},
        {"+", Tok::Additive}, {"-", Tok::Additive}, {"~", Tok::Additive}, {"**", Tok::Power},
        {"*", Tok::Multiplicative}, {"//", Tok::Multiplicative}, {"/", Tok::Multiplicative},
        {"%", Tok::Multiplicative}, {"=", Tok::Equals}};
    for (const auto& [seq, type] : kRules) {
      if (type == Tok::CloseExpression && curly_depth_ > 0) continue;  // "}}" closing an object literal
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
    syntax_error(line_at(pos_), "unexpected character '" + std::string(1, c) + "' inside a tag");
  }

  const std::string& src_;
  const std::vector<uint32_t>& origin_;
  std::vector<uint32_t> newlines_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int curly_depth_ = 0;
};

// ---------------------------------------------------------------- parser

const char* describe(Tok t) {
  switch (t) {
    case Tok::Text: return "text";
    case Tok::Number: return "a number";
    case Tok::String: return "a string";
    case Tok::Ident: return "a name";
    case Tok::Equals: return "'='";
    case Tok::OpenParen: return "'('";
    case Tok::CloseParen: return "')'";
    case Tok::OpenStatement: return "'{%'";
    case Tok::CloseStatement: return "'%}'";
    case Tok::OpenExpression: return "'{{'";
    case Tok::CloseExpression: return "'}}'";
    case Tok::OpenSquare: return "'['";
    case Tok::CloseSquare: return "']'";
    case Tok::OpenCurly: return "'{'";
    case Tok::CloseCurly: return "'}'";
    case Tok::Comma: return "','";
    case Tok::Dot: return "'.'";
    case Tok::Colon: return "':'";
    case Tok::Pipe: return "'|'";
    case Tok::Additive: case Tok::Multiplicative: case Tok::Power: case Tok::Comparison: case Tok::Unary:
      return "an operator";
    case Tok::Comment: return "a comment";
  }
  return "a token";
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, int max_depth) : tokens_(std::move(tokens)), max_depth_(max_depth) {}

  std::vector<NodePtr> run() {
    std::vector<NodePtr> body;
    while (pos_ < tokens_.size()) {
      if (NodePtr n = parse_any()) body.push_back(std::move(n));
    }
    return body;
  }

 private:
  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > p.max_depth_)
        syntax_error(p.line(), "nesting deeper than " + std::to_string(p.max_depth_) + " levels");
    }
    ~DepthGuard() { --p.depth_; }
  };

  int line() const {
    if (tokens_.empty()) return 1;
    return tokens_[std::min(pos_, tokens_.size() - 1)].line;
  }
  bool is(Tok t, size_t ahead = 0) const { return pos_ + ahead < tokens_.size() && tokens_[pos_ + ahead].type == t; }
  bool is_ident(std::string_view name, size_t ahead = 0) const {
    return is(Tok::Ident, ahead) && tokens_[pos_ + ahead].value == name;
  }
  bool is_statement(std::initializer_list<std::string_view> names) const {
    if (!is(Tok::OpenStatement) || !is(Tok::Ident, 1)) return false;
    for (auto n : names)
      if (tokens_[pos_ + 1].value == n) return true;
    return false;
  }
  const Token& expect(Tok t, const char* context) {
    if (pos_ >= tokens_.size()) syntax_error(line(), std::string("the template ends where ") + describe(t) + " is expected " + context);
    if (tokens_[pos_].type != t)
      syntax_error(tokens_[pos_].line, std::string("expected ") + describe(t) + " " + context + ", found " +
                                           describe(tokens_[pos_].type) + quote(tokens_[pos_]));
    return tokens_[pos_++];
  }
  static std::string quote(const Token& t) {
    if (t.type == Tok::Text || t.type == Tok::Comment) return "";
    return " '" + t.value.substr(0, 40) + "'";
  }
  void expect_ident(std::string_view name, const char* context) {
    if (!is_ident(name)) syntax_error(line(), "expected '" + std::string(name) + "' " + context);
    ++pos_;
  }
  const Token& next(const char* context) {
    if (pos_ >= tokens_.size()) syntax_error(line(), std::string("the template ends ") + context);
    return tokens_[pos_++];
  }
  NodePtr node(NodeKind kind, int at_line) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->line = at_line;
    return n;
  }
  // The body of a block up to (not including) one of the given {% names %}; the last name is the
  // one that closes the block.
  std::vector<NodePtr> block_until(std::initializer_list<std::string_view> names, const char* opener, int opened_at) {
    std::vector<NodePtr> body;
    while (!is_statement(names)) {
      if (pos_ >= tokens_.size())
        syntax_error(opened_at, std::string(opener) + " is never closed (expected {% " + std::string(*(names.end() - 1)) + " %})");
      if (NodePtr n = parse_any()) body.push_back(std::move(n));
    }
    return body;
  }

  NodePtr parse_any() {
    DepthGuard guard(*this);
    const Token& t = tokens_[pos_];
    switch (t.type) {
      case Tok::Comment: ++pos_; return nullptr;
      case Tok::Text: {
        auto n = node(NodeKind::Text, t.line);
        n->str = t.value;
        ++pos_;
        return n;
      }
      case Tok::OpenStatement: return parse_statement();
      case Tok::OpenExpression: {
        ++pos_;
        auto n = node(NodeKind::Output, t.line);
        n->kids.push_back(parse_expression());
        expect(Tok::CloseExpression, "to close {{");
        return n;
      }
      default: syntax_error(t.line, std::string("unexpected ") + describe(t.type) + quote(t));
    }
  }

  NodePtr parse_statement() {
    const int at = tokens_[pos_].line;
    ++pos_;  // {%
    if (!is(Tok::Ident)) syntax_error(at, "expected a statement name after {%");
    const std::string name = tokens_[pos_++].value;
    if (name == "set") return parse_set(at);
    if (name == "if") {
      auto n = parse_if(at);
      expect(Tok::OpenStatement, "for {% endif %}");
      expect_ident("endif", "to close {% if %}");
      expect(Tok::CloseStatement, "after endif");
      return n;
    }
    if (name == "for") return parse_for(at);
    if (name == "macro") return parse_macro(at);
    if (name == "break" || name == "continue") {
      expect(Tok::CloseStatement, ("after " + name).c_str());
      return node(name == "break" ? NodeKind::Break : NodeKind::Continue, at);
    }
    if (name == "filter") return parse_filter_block(at);
    static const char* const kUnsupported[] = {"call", "raw", "include", "import", "from", "extends",
                                               "block", "with", "autoescape", "do"};
    for (const char* u : kUnsupported)
      if (name == u) syntax_error(at, "the {% " + name + " %} statement is not supported by this chat template engine");
    if (name.rfind("end", 0) == 0 || name == "else" || name == "elif")
      syntax_error(at, "{% " + name + " %} without a matching opening statement");
    syntax_error(at, "unknown statement {% " + name + " %}");
  }

  // {% filter name(args) %}...{% endfilter %}: a Filter node whose operand is the rendered body.
  NodePtr parse_filter_block(int at) {
    auto n = node(NodeKind::Filter, at);
    if (!is(Tok::Ident)) syntax_error(at, "expected a filter name after {% filter");
    n->str = tokens_[pos_++].value;
    n->kids.push_back(nullptr);
    if (is(Tok::OpenParen)) {
      n->flag = true;
      for (auto& arg : parse_call_arguments()) n->kids.push_back(std::move(arg));
    }
    expect(Tok::CloseStatement, "after the {% filter %} header");
    n->body = block_until({"endfilter"}, "{% filter %}", at);
    pos_ += 2;  // {% endfilter
    expect(Tok::CloseStatement, "after endfilter");
    return n;
  }

  NodePtr parse_set(int at) {
    auto n = node(NodeKind::Set, at);
    n->kids.push_back(parse_expression_sequence(false));
    if (is(Tok::Equals)) {
      ++pos_;
      n->kids.push_back(parse_expression_sequence(false));
    } else {
      n->kids.push_back(nullptr);
      expect(Tok::CloseStatement, "after {% set name %}");
      n->body = block_until({"endset"}, "{% set %}", at);
      pos_ += 2;  // {% endset
    }
    expect(Tok::CloseStatement, "to close {% set %}");
    const NodeKind target = n->kids[0]->kind;
    if (target != NodeKind::Ident && target != NodeKind::TupleLit && target != NodeKind::Member)
      syntax_error(at, "{% set %} can assign only to a name, a tuple of names or a namespace attribute");
    return n;
  }

  NodePtr parse_if(int at) {
    auto n = node(NodeKind::If, at);
    n->kids.push_back(parse_expression());
    expect(Tok::CloseStatement, "after the {% if %} condition");
    n->body = block_until({"elif", "else", "endif"}, "{% if %}", at);
    if (is_statement({"elif"})) {
      const int elif_at = tokens_[pos_].line;
      pos_ += 2;
      n->alt.push_back(parse_if(elif_at));
    } else if (is_statement({"else"})) {
      pos_ += 2;
      expect(Tok::CloseStatement, "after {% else");
      n->alt = block_until({"endif"}, "{% if %}", at);
    }
    return n;
  }

  NodePtr parse_for(int at) {
    auto n = node(NodeKind::For, at);
    n->kids.push_back(parse_expression_sequence(true));
    const NodeKind var = n->kids[0]->kind;
    if (var != NodeKind::Ident && var != NodeKind::TupleLit)
      syntax_error(at, "the loop variable of {% for %} must be a name or a tuple of names");
    expect_ident("in", "after the loop variable of {% for %}");
    n->kids.push_back(parse_expression());
    if (is_ident("recursive")) syntax_error(at, "recursive for loops are not supported");
    expect(Tok::CloseStatement, "after the {% for %} header");
    n->body = block_until({"else", "endfor"}, "{% for %}", at);
    if (is_statement({"else"})) {
      pos_ += 2;
      expect(Tok::CloseStatement, "after {% else");
      n->alt = block_until({"endfor"}, "{% for %}", at);
    }
    pos_ += 2;  // {% endfor
    expect(Tok::CloseStatement, "after endfor");
    return n;
  }

  NodePtr parse_macro(int at) {
    auto n = node(NodeKind::Macro, at);
    if (!is(Tok::Ident)) syntax_error(at, "expected the macro's name after {% macro");
    n->str = tokens_[pos_++].value;
    expect(Tok::OpenParen, "after the macro name");
    while (!is(Tok::CloseParen)) {
      if (!is(Tok::Ident)) syntax_error(line(), "macro parameters must be names (optionally name=default)");
      auto param = node(NodeKind::Ident, line());
      param->str = tokens_[pos_++].value;
      if (is(Tok::Equals)) {
        ++pos_;
        auto kw = node(NodeKind::KwArg, param->line);
        kw->str = param->str;
        kw->kids.push_back(parse_expression());
        param = std::move(kw);
      }
      for (const auto& p : n->kids)
        if (p->str == param->str) syntax_error(param->line, "duplicate macro parameter '" + param->str + "'");
      n->kids.push_back(std::move(param));
      if (!is(Tok::Comma)) break;
      ++pos_;
    }
    expect(Tok::CloseParen, "to close the macro parameters");
    expect(Tok::CloseStatement, "after the {% macro %} header");
    n->body = block_until({"endmacro"}, "{% macro %}", at);
    pos_ += 2;  // {% endmacro
    expect(Tok::CloseStatement, "after endmacro");
    return n;
  }

  NodePtr parse_expression_sequence(bool primary) {
    const int at = line();
    NodePtr first = primary ? parse_primary() : parse_expression();
    if (!is(Tok::Comma)) return first;
    auto tuple = node(NodeKind::TupleLit, at);
    tuple->kids.push_back(std::move(first));
    while (is(Tok::Comma)) {
      ++pos_;
      tuple->kids.push_back(primary ? parse_primary() : parse_expression());
    }
    return tuple;
  }

  NodePtr parse_expression() {
    DepthGuard guard(*this);
    NodePtr a = parse_or();
    if (!is_ident("if")) return a;
    const int at = line();
    ++pos_;
    NodePtr test = parse_or();
    if (is_ident("else")) {
      ++pos_;
      auto n = node(NodeKind::Ternary, at);
      n->kids.push_back(std::move(test));
      n->kids.push_back(std::move(a));
      n->kids.push_back(parse_expression());
      return n;
    }
    auto n = node(NodeKind::Select, at);
    n->kids.push_back(std::move(a));
    n->kids.push_back(std::move(test));
    return n;
  }

  NodePtr binary(std::string op, NodePtr left, NodePtr right, int at) {
    auto n = node(NodeKind::Binary, at);
    n->str = std::move(op);
    n->kids.push_back(std::move(left));
    n->kids.push_back(std::move(right));
    return n;
  }
  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (is_ident("or")) {
      const int at = line();
      ++pos_;
      left = binary("or", std::move(left), parse_and(), at);
    }
    return left;
  }
  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (is_ident("and")) {
      const int at = line();
      ++pos_;
      left = binary("and", std::move(left), parse_not(), at);
    }
    return left;
  }
  NodePtr parse_not() {
    if (!is_ident("not")) return parse_comparison();
    DepthGuard guard(*this);
    auto n = node(NodeKind::Unary, line());
    ++pos_;
    n->str = "not";
    n->kids.push_back(parse_not());
    return n;
  }
  NodePtr parse_comparison() {
    NodePtr left = parse_additive();
    while (true) {
      const int at = line();
      std::string op;
      if (is_ident("not") && is_ident("in", 1)) {
        op = "not in";
        pos_ += 2;
      } else if (is_ident("in")) {
        op = "in";
        ++pos_;
      } else if (is(Tok::Comparison)) {
        op = tokens_[pos_++].value;
      } else {
        return left;
      }
      left = binary(op, std::move(left), parse_additive(), at);
    }
  }
  NodePtr parse_additive() {
    NodePtr left = parse_multiplicative();
    while (is(Tok::Additive)) {
      const int at = line();
      std::string op = tokens_[pos_++].value;
      left = binary(op, std::move(left), parse_multiplicative(), at);
    }
    return left;
  }
  NodePtr parse_multiplicative() {
    NodePtr left = parse_power();
    while (is(Tok::Multiplicative)) {
      const int at = line();
      std::string op = tokens_[pos_++].value;
      left = binary(op, std::move(left), parse_power(), at);
    }
    return left;
  }
  NodePtr parse_power() {
    NodePtr left = parse_test();
    while (is(Tok::Power)) {  // left-associative, as in Jinja
      const int at = line();
      ++pos_;
      left = binary("**", std::move(left), parse_test(), at);
    }
    return left;
  }
  NodePtr parse_test() {
    NodePtr operand = parse_filter();
    while (is_ident("is")) {
      auto n = node(NodeKind::Test, line());
      ++pos_;
      if (is_ident("not")) {
        n->flag = true;
        ++pos_;
      }
      const Token& name = next("after 'is'");
      if (name.type != Tok::Ident) syntax_error(name.line, "expected a test name after 'is'");
      n->str = name.value;
      if (is(Tok::OpenParen) || is(Tok::Number) || is(Tok::String))
        syntax_error(name.line, "tests with arguments ('is " + name.value + "(...)') are not supported");
      n->kids.push_back(std::move(operand));
      operand = std::move(n);
    }
    return operand;
  }
  NodePtr parse_filter() {
    NodePtr operand = parse_unary_sign();
    while (is(Tok::Pipe)) {
      auto n = node(NodeKind::Filter, line());
      ++pos_;
      const Token& name = next("after '|'");
      if (name.type != Tok::Ident) syntax_error(name.line, "expected a filter name after '|'");
      n->str = name.value;
      n->kids.push_back(std::move(operand));
      if (is(Tok::OpenParen)) {
        n->flag = true;
        for (auto& arg : parse_call_arguments()) n->kids.push_back(std::move(arg));
        if (is(Tok::Dot) || is(Tok::OpenSquare) || is(Tok::OpenParen))
          syntax_error(n->line, "member access or a call directly after a filter call is not supported");
      }
      operand = std::move(n);
    }
    return operand;
  }
  NodePtr parse_unary_sign() {
    if ((is(Tok::Unary) || is(Tok::Additive)) && (tokens_[pos_].value == "-" || tokens_[pos_].value == "+")) {
      DepthGuard guard(*this);
      auto n = node(NodeKind::Unary, line());
      n->str = tokens_[pos_++].value;
      n->kids.push_back(parse_unary_sign());
      return n;
    }
    return parse_call_member();
  }
  NodePtr parse_call_member() {
    NodePtr expr = parse_member(parse_primary());
    while (is(Tok::OpenParen)) {
      auto call = node(NodeKind::Call, line());
      call->kids.push_back(std::move(expr));
      for (auto& arg : parse_call_arguments()) call->kids.push_back(std::move(arg));
      expr = parse_member(std::move(call));
    }
    return expr;
  }
  std::vector<NodePtr> parse_call_arguments() {
    expect(Tok::OpenParen, "to start the arguments");
    std::vector<NodePtr> args;
    bool keyword_seen = false;
    while (!is(Tok::CloseParen)) {
      if (is(Tok::Multiplicative) || is(Tok::Power))
        syntax_error(line(), "argument unpacking (*args, **kwargs) is not supported");
      if (is(Tok::Ident) && is(Tok::Equals, 1)) {
        auto kw = node(NodeKind::KwArg, line());
        kw->str = tokens_[pos_].value;
        pos_ += 2;
        kw->kids.push_back(parse_expression());
        args.push_back(std::move(kw));
        keyword_seen = true;
      } else {
        if (keyword_seen) syntax_error(line(), "a positional argument follows a keyword argument");
        args.push_back(parse_expression());
      }
      if (!is(Tok::Comma)) break;
      ++pos_;
    }
    expect(Tok::CloseParen, "to close the arguments");
    return args;
  }
  NodePtr parse_member(NodePtr object) {
    while (is(Tok::Dot) || is(Tok::OpenSquare)) {
      auto n = node(NodeKind::Member, line());
      const bool computed = is(Tok::OpenSquare);
      ++pos_;
      n->flag = computed;
      n->kids.push_back(std::move(object));
      if (computed) {
        n->kids.push_back(parse_subscript());
        expect(Tok::CloseSquare, "to close the subscript");
      } else {
        const Token& name = next("after '.'");
        if (name.type != Tok::Ident && !(name.type == Tok::Number && name.value.find_first_not_of("0123456789") == std::string::npos))
          syntax_error(name.line, "expected a name or an integer after '.'");
        auto prop = node(name.type == Tok::Ident ? NodeKind::Ident : NodeKind::IntLit, name.line);
        if (name.type == Tok::Ident) prop->str = name.value;
        else prop->integer = parse_integer(name);
        n->kids.push_back(std::move(prop));
      }
      object = std::move(n);
    }
    return object;
  }
  NodePtr parse_subscript() {  // [x], [a:b], [a:b:c], [::-1]
    const int at = line();
    std::vector<NodePtr> parts;
    bool slice = false;
    while (!is(Tok::CloseSquare)) {
      if (pos_ >= tokens_.size()) syntax_error(at, "unclosed '['");
      if (is(Tok::Colon)) {
        parts.push_back(nullptr);
        ++pos_;
        slice = true;
      } else {
        parts.push_back(parse_expression());
        if (is(Tok::Colon)) {
          ++pos_;
          slice = true;
        }
      }
    }
    if (parts.empty()) syntax_error(at, "empty subscript []");
    if (!slice) {
      if (parts.size() != 1) syntax_error(at, "a subscript takes one expression");
      return std::move(parts[0]);
    }
    if (parts.size() > 3) syntax_error(at, "a slice has at most three parts");
    auto n = node(NodeKind::Slice, at);
    parts.resize(3);
    n->kids = std::move(parts);
    return n;
  }
  static int64_t parse_integer(const Token& t) {
    try {
      size_t used = 0;
      const long long v = std::stoll(t.value, &used);
      if (used != t.value.size()) throw std::invalid_argument("");
      return v;
    } catch (const std::exception&) {
      syntax_error(t.line, "integer literal " + t.value + " is out of range");
    }
  }

  NodePtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = next("where an expression is expected");
    switch (t.type) {
      case Tok::Number: {
        if (t.value.find('.') != std::string::npos) {
          auto n = node(NodeKind::FloatLit, t.line);
          n->real = std::stod(t.value);
          return n;
        }
        auto n = node(NodeKind::IntLit, t.line);
        n->integer = parse_integer(t);
        return n;
      }
      case Tok::String: {
        auto n = node(NodeKind::StringLit, t.line);
        n->str = t.value;
        while (is(Tok::String)) n->str += tokens_[pos_++].value;  // "a" "b" == "ab"
        return n;
      }
      case Tok::Ident: {
        auto n = node(NodeKind::Ident, t.line);
        n->str = t.value;
        return n;
      }
      case Tok::OpenParen: {
        NodePtr inner = parse_expression_sequence(false);
        expect(Tok::CloseParen, "to close '('");
        return inner;
      }
      case Tok::OpenSquare: {
        auto n = node(NodeKind::ArrayLit, t.line);
        while (!is(Tok::CloseSquare)) {
          if (pos_ >= tokens_.size()) syntax_error(t.line, "unclosed list literal '['");
          n->kids.push_back(parse_expression());
          if (is(Tok::Comma)) ++pos_;
        }
        ++pos_;
        return n;
      }
      case Tok::OpenCurly: {
        auto n = node(NodeKind::ObjectLit, t.line);
        while (!is(Tok::CloseCurly)) {
          if (pos_ >= tokens_.size()) syntax_error(t.line, "unclosed dict literal '{'");
          n->kids.push_back(parse_expression());
          expect(Tok::Colon, "between a key and its value in a dict literal");
          n->kids.push_back(parse_expression());
          if (is(Tok::Comma)) ++pos_;
        }
        ++pos_;
        return n;
      }
      default: syntax_error(t.line, std::string("unexpected ") + describe(t.type) + quote(t) + " where an expression is expected");
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int max_depth_;
};

}  // namespace

std::vector<NodePtr> parse_template(std::string_view source, int max_depth) {
  if (source.size() > (size_t{1} << 30)) throw Error("chat template is larger than 1 GiB");
  const Source pre = preprocess(source);
  return Parser(Lexer(pre, source).run(), max_depth).run();
}

}  // namespace distil::text::jinja
