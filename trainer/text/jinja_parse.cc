// Jinja chat templates, front end part 2: parsing tokens into the syntax tree, with
// @huggingface/jinja's grammar (src/parser.ts) and operator precedence, which differs from Python
// Jinja in places (e.g. `is` binds tighter than `+`). Every error names the template line.
#include <algorithm>

#include "trainer/text/jinja_ast.h"

namespace distil::text::jinja {
namespace {

// ---------------------------------------------------------------- parser

const char* describe(Tok t) {
  switch (t) {
    case Tok::Text:
      return "text";
    case Tok::Number:
      return "a number";
    case Tok::String:
      return "a string";
    case Tok::Ident:
      return "a name";
    case Tok::Equals:
      return "'='";
    case Tok::OpenParen:
      return "'('";
    case Tok::CloseParen:
      return "')'";
    case Tok::OpenStatement:
      return "'{%'";
    case Tok::CloseStatement:
      return "'%}'";
    case Tok::OpenExpression:
      return "'{{'";
    case Tok::CloseExpression:
      return "'}}'";
    case Tok::OpenSquare:
      return "'['";
    case Tok::CloseSquare:
      return "']'";
    case Tok::OpenCurly:
      return "'{'";
    case Tok::CloseCurly:
      return "'}'";
    case Tok::Comma:
      return "','";
    case Tok::Dot:
      return "'.'";
    case Tok::Colon:
      return "':'";
    case Tok::Pipe:
      return "'|'";
    case Tok::Additive:
    case Tok::Multiplicative:
    case Tok::Power:
    case Tok::Comparison:
    case Tok::Unary:
      return "an operator";
    case Tok::Comment:
      return "a comment";
  }
  return "a token";
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, int max_depth)
      : tokens_(std::move(tokens)), max_depth_(max_depth) {}

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
        fail(p.line(), "nesting deeper than " + std::to_string(p.max_depth_) + " levels");
    }
    ~DepthGuard() { --p.depth_; }
  };

  int line() const {
    if (tokens_.empty()) return 1;
    return tokens_[std::min(pos_, tokens_.size() - 1)].line;
  }
  bool is(Tok t, size_t ahead = 0) const {
    return pos_ + ahead < tokens_.size() && tokens_[pos_ + ahead].type == t;
  }
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
    if (pos_ >= tokens_.size())
      fail(line(),
           std::string("the template ends where ") + describe(t) + " is expected " + context);
    if (tokens_[pos_].type != t)
      fail(tokens_[pos_].line, std::string("expected ") + describe(t) + " " + context + ", found " +
                                   describe(tokens_[pos_].type) + quote(tokens_[pos_]));
    return tokens_[pos_++];
  }
  static std::string quote(const Token& t) {
    if (t.type == Tok::Text || t.type == Tok::Comment) return "";
    return " '" + t.value.substr(0, 40) + "'";
  }
  void expect_ident(std::string_view name, const char* context) {
    if (!is_ident(name)) fail(line(), "expected '" + std::string(name) + "' " + context);
    ++pos_;
  }
  const Token& next(const char* context) {
    if (pos_ >= tokens_.size()) fail(line(), std::string("the template ends ") + context);
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
  std::vector<NodePtr> block_until(std::initializer_list<std::string_view> names,
                                   const char* opener, int opened_at) {
    std::vector<NodePtr> body;
    while (!is_statement(names)) {
      if (pos_ >= tokens_.size())
        fail(opened_at, std::string(opener) + " is never closed (expected {% " +
                            std::string(*(names.end() - 1)) + " %})");
      if (NodePtr n = parse_any()) body.push_back(std::move(n));
    }
    return body;
  }

  NodePtr parse_any() {
    DepthGuard guard(*this);
    const Token& t = tokens_[pos_];
    switch (t.type) {
      case Tok::Comment:
        ++pos_;
        return nullptr;
      case Tok::Text: {
        auto n = node(NodeKind::Text, t.line);
        n->str = t.value;
        ++pos_;
        return n;
      }
      case Tok::OpenStatement:
        return parse_statement();
      case Tok::OpenExpression: {
        ++pos_;
        auto n = node(NodeKind::Output, t.line);
        n->kids.push_back(parse_expression());
        expect(Tok::CloseExpression, "to close {{");
        return n;
      }
      default:
        fail(t.line, std::string("unexpected ") + describe(t.type) + quote(t));
    }
  }

  NodePtr parse_statement() {
    const int at = tokens_[pos_].line;
    ++pos_;  // {%
    if (!is(Tok::Ident)) fail(at, "expected a statement name after {%");
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
    static const char* const kUnsupported[] = {"call",    "raw",   "include", "import",     "from",
                                               "extends", "block", "with",    "autoescape", "do"};
    for (const char* u : kUnsupported)
      if (name == u)
        fail(at, "the {% " + name + " %} statement is not supported by this chat template engine");
    if (name.rfind("end", 0) == 0 || name == "else" || name == "elif")
      fail(at, "{% " + name + " %} without a matching opening statement");
    fail(at, "unknown statement {% " + name + " %}");
  }

  // {% filter name(args) %}...{% endfilter %}: a Filter node whose operand is the rendered body.
  NodePtr parse_filter_block(int at) {
    auto n = node(NodeKind::Filter, at);
    if (!is(Tok::Ident)) fail(at, "expected a filter name after {% filter");
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
      fail(at, "{% set %} can assign only to a name, a tuple of names or a namespace attribute");
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
      fail(at, "the loop variable of {% for %} must be a name or a tuple of names");
    expect_ident("in", "after the loop variable of {% for %}");
    n->kids.push_back(parse_expression());
    if (is_ident("recursive")) fail(at, "recursive for loops are not supported");
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
    if (!is(Tok::Ident)) fail(at, "expected the macro's name after {% macro");
    n->str = tokens_[pos_++].value;
    expect(Tok::OpenParen, "after the macro name");
    while (!is(Tok::CloseParen)) {
      if (!is(Tok::Ident)) fail(line(), "macro parameters must be names (optionally name=default)");
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
        if (p->str == param->str)
          fail(param->line, "duplicate macro parameter '" + param->str + "'");
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
      if (name.type != Tok::Ident) fail(name.line, "expected a test name after 'is'");
      n->str = name.value;
      if (is(Tok::OpenParen) || is(Tok::Number) || is(Tok::String))
        fail(name.line, "tests with arguments ('is " + name.value + "(...)') are not supported");
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
      if (name.type != Tok::Ident) fail(name.line, "expected a filter name after '|'");
      n->str = name.value;
      n->kids.push_back(std::move(operand));
      if (is(Tok::OpenParen)) {
        n->flag = true;
        for (auto& arg : parse_call_arguments()) n->kids.push_back(std::move(arg));
        if (is(Tok::Dot) || is(Tok::OpenSquare) || is(Tok::OpenParen))
          fail(n->line, "member access or a call directly after a filter call is not supported");
      }
      operand = std::move(n);
    }
    return operand;
  }
  NodePtr parse_unary_sign() {
    if ((is(Tok::Unary) || is(Tok::Additive)) &&
        (tokens_[pos_].value == "-" || tokens_[pos_].value == "+")) {
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
        fail(line(), "argument unpacking (*args, **kwargs) is not supported");
      if (is(Tok::Ident) && is(Tok::Equals, 1)) {
        auto kw = node(NodeKind::KwArg, line());
        kw->str = tokens_[pos_].value;
        pos_ += 2;
        kw->kids.push_back(parse_expression());
        args.push_back(std::move(kw));
        keyword_seen = true;
      } else {
        if (keyword_seen) fail(line(), "a positional argument follows a keyword argument");
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
        if (name.type != Tok::Ident &&
            !(name.type == Tok::Number &&
              name.value.find_first_not_of("0123456789") == std::string::npos))
          fail(name.line, "expected a name or an integer after '.'");
        auto prop = node(name.type == Tok::Ident ? NodeKind::Ident : NodeKind::IntLit, name.line);
        if (name.type == Tok::Ident)
          prop->str = name.value;
        else
          prop->integer = parse_integer(name);
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
      if (pos_ >= tokens_.size()) fail(at, "unclosed '['");
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
    if (parts.empty()) fail(at, "empty subscript []");
    if (!slice) {
      if (parts.size() != 1) fail(at, "a subscript takes one expression");
      return std::move(parts[0]);
    }
    if (parts.size() > 3) fail(at, "a slice has at most three parts");
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
      fail(t.line, "integer literal " + t.value + " is out of range");
    }
  }

  NodePtr parse_primary() {
    DepthGuard guard(*this);
    const Token& t = next("where an expression is expected");
    switch (t.type) {
      case Tok::Number: {
        if (t.value.find('.') != std::string::npos) {
          auto n = node(NodeKind::FloatLit, t.line);
          n->real = std::strtod(t.value.c_str(), nullptr);  // huge literals become infinity
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
          if (pos_ >= tokens_.size()) fail(t.line, "unclosed list literal '['");
          n->kids.push_back(parse_expression());
          if (is(Tok::Comma)) ++pos_;
        }
        ++pos_;
        return n;
      }
      case Tok::OpenCurly: {
        auto n = node(NodeKind::ObjectLit, t.line);
        while (!is(Tok::CloseCurly)) {
          if (pos_ >= tokens_.size()) fail(t.line, "unclosed dict literal '{'");
          n->kids.push_back(parse_expression());
          expect(Tok::Colon, "between a key and its value in a dict literal");
          n->kids.push_back(parse_expression());
          if (is(Tok::Comma)) ++pos_;
        }
        ++pos_;
        return n;
      }
      default:
        fail(t.line, std::string("unexpected ") + describe(t.type) + quote(t) +
                         " where an expression is expected");
    }
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int max_depth_;
};

}  // namespace

std::vector<NodePtr> parse_template(std::string_view source, int max_depth) {
  return Parser(tokenize(source), max_depth).run();
}

}  // namespace distil::text::jinja
