// Internal to the Jinja engine (trainer/text/jinja*.cc): the syntax tree the parser builds and
// the evaluator walks. Not part of the public interface (trainer/text/jinja.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trainer/text/jinja.h"

namespace distil::text::jinja {

enum class NodeKind {
  // statements
  Text,    // str
  Output,  // {{ kids[0] }}
  If,      // kids[0] test; body; alt (an elif is one nested If in alt)
  For,     // kids[0] loop variable (Ident or Tuple); kids[1] iterable (may be Select); body; alt
  Set,     // kids[0] target; kids[1] value, or body for {% set x %}...{% endset %}
  Macro,   // str name; kids parameters (Ident, or KwArg with its default); body
  Break,
  Continue,
  // expressions
  StringLit,  // str
  IntLit,     // integer
  FloatLit,   // real
  Ident,      // str
  ArrayLit,   // kids
  TupleLit,   // kids
  ObjectLit,  // kids: key, value, key, value, ...
  Member,     // kids[0] object, kids[1] property; flag = computed (obj[expr]) rather than obj.name
  Slice,      // kids[0..2] start, stop, step (null = omitted)
  Call,       // kids[0] callee, kids[1..] arguments (KwArg for name=value)
  KwArg,      // str name; kids[0] value
  Filter,   // kids[0] operand (null in a {% filter %} block: body); str name; kids[1..] arguments;
            // flag = written with ()
  Test,     // kids[0] operand; str test name; flag = negated (is not)
  Unary,    // str operator (not, -, +); kids[0]
  Binary,   // str operator; kids[0], kids[1]
  Ternary,  // kids[0] condition, kids[1] if true, kids[2] if false
  Select,   // kids[0] value, kids[1] condition (an `a if b` without else)
};

struct Node {
  NodeKind kind;
  int line = 0;  // 1-based line in the original template source
  std::string str;
  int64_t integer = 0;
  double real = 0;
  bool flag = false;
  std::vector<std::unique_ptr<Node>> kids;  // null entries only in Slice
  std::vector<std::unique_ptr<Node>> body, alt;
};
using NodePtr = std::unique_ptr<Node>;

struct Template::Program {
  std::vector<NodePtr> body;
};

[[noreturn]] void fail(int line, const std::string& what);  // throws Error naming the template line

enum class Tok {
  Text,
  Number,
  String,
  Ident,
  Equals,
  OpenParen,
  CloseParen,
  OpenStatement,
  CloseStatement,
  OpenExpression,
  CloseExpression,
  OpenSquare,
  CloseSquare,
  OpenCurly,
  CloseCurly,
  Comma,
  Dot,
  Colon,
  Pipe,
  Additive,
  Multiplicative,
  Power,
  Comparison,
  Unary,
  Comment
};

struct Token {
  Tok type;
  std::string value;
  int line;
};

// Preprocesses and lexes a chat template (trainer/text/jinja_lex.cc).
std::vector<Token> tokenize(std::string_view source);
// Parses a chat template, nesting at most max_depth levels (trainer/text/jinja_parse.cc).
std::vector<NodePtr> parse_template(std::string_view source, int max_depth);

// The whitespace of JavaScript's String.prototype.trim, on UTF-8 text.
std::string_view js_trim_start(std::string_view s);
std::string_view js_trim_end(std::string_view s);
// Length of the whitespace code point at s[i] (0 when there is none).
size_t js_whitespace_at(std::string_view s, size_t i);

}  // namespace distil::text::jinja
