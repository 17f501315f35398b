// LaTeX-ish answer text -> GiNaC values: a recursive-descent parser over the normaliser's output
// (math_normalize.cc); the equivalence rules between values are in math_compare.cc. Every input is
// hostile: sizes and exponents are bounded, and any GiNaC exception means "not parseable", never
// a crash.
#include "graders/math_parse.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "graders/math_normalize.h"
#include "graders/text_util.h"

// \sum_{k=a}^{b} f as an unevaluated GiNaC function: two sums are equal when their bodies and
// bounds are (sums are not evaluated, so a written-out sum and its closed form differ).
DECLARE_FUNCTION_4P(distil_sum)
REGISTER_FUNCTION(distil_sum, dummy())

namespace distil::graders::math {
namespace {

constexpr std::size_t kMaxLatexChars = 1500;
constexpr int kMaxDepth = 48;
constexpr long kMaxSymbolicExponent = 64;
constexpr long kMaxNumericExponent = 4096;
constexpr long kMaxFactorial = 300;
constexpr std::size_t kMaxAlternatives = 8;   // "\pm" expansions
constexpr std::size_t kMaxItems = 64;         // elements of a tuple/set/matrix
constexpr std::size_t kMaxSymbols = 50000;    // symbol table size before it is recycled

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// GiNaC symbols compare by identity, so equal names must map to one symbol object.
std::map<std::string, GiNaC::symbol>& symbol_table() {
  static std::map<std::string, GiNaC::symbol> table;
  return table;
}

// Content of the brace group starting at `open` (s[open] == '{'), and the index after it.
std::optional<std::pair<std::string, std::size_t>> brace_group(std::string_view s, std::size_t open) {
  if (open >= s.size() || s[open] != '{') return std::nullopt;
  int depth = 0;
  for (std::size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    else if (s[i] == '}' && --depth == 0) return std::make_pair(std::string(s.substr(open + 1, i - open - 1)), i + 1);
  }
  return std::nullopt;
}

const std::vector<std::string>& unit_words() {
  static const std::vector<std::string> units = {
      "cm", "mm", "km", "m", "kg", "g", "mg", "s", "sec", "seconds", "second", "min", "minutes", "minute",
      "hours", "hour", "hr", "hrs", "h", "days", "day", "weeks", "years", "year", "miles", "mile", "mph",
      "meters", "meter", "metres", "feet", "foot", "ft", "inches", "inch", "in", "yards", "yd", "units",
      "unit", "square", "sq", "cubic", "degrees", "degree", "deg", "dollars", "dollar", "cents", "cent",
      "yuan", "euros", "pounds", "lb", "lbs", "liters", "litres", "liter", "l", "ml", "people", "students",
      "ways", "points", "cups", "gallons", "ounces", "oz", "grams", "kilograms", "apples", "times"};
  return units;
}
bool is_unit_text(std::string t) {
  t = text::to_lower(text::trim(t));
  while (!t.empty() && (t.back() == '.' || t.back() == '^' || std::isdigit(static_cast<unsigned char>(t.back())))) t.pop_back();
  if (t.empty()) return true;
  // "cm^2", "m/s", "square units": every word must be a unit
  std::string word;
  auto ok = [&](const std::string& w) {
    return w.empty() || std::find(unit_words().begin(), unit_words().end(), w) != unit_words().end();
  };
  for (char c : t) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      word += c;
    } else {
      if (!ok(word)) return false;
      word.clear();
    }
  }
  return ok(word);
}

}  // namespace

GiNaC::ex symbol_named(const std::string& name) {
  auto& table = symbol_table();
  auto it = table.find(name);
  if (it != table.end()) return it->second;
  return table.emplace(name, GiNaC::symbol(name)).first->second;
}
const GiNaC::ex& infinity_symbol() {
  static const GiNaC::ex inf = GiNaC::symbol("oo");
  return inf;
}

std::recursive_mutex& ginac_mutex() {
  static std::recursive_mutex m;
  return m;
}

ParsedAnswer::~ParsedAnswer() {
  std::lock_guard lock(ginac_mutex());
  value = Value{};
}

// ---------------------------------------------------------------------------------------------
// The parser: recursive descent over the normalised text.

Value scalar(GiNaC::ex e, bool has_float, bool only_symbols) {
  Value v;
  v.kind = Value::Kind::scalar;
  v.ex = std::move(e);
  v.has_float = has_float;
  v.only_symbols = only_symbols;
  return v;
}

namespace {

class Parser {
 public:
  Parser(std::string s, bool plain) : s_(std::move(s)), plain_(plain) {}

  Value parse_all() {
    Value v = parse_list(0);
    skip();
    if (pos_ < s_.size()) throw ParseError("unexpected '" + std::string(1, s_[pos_]) + "'");
    return v;
  }

 private:
  std::string s_;
  bool plain_;
  std::size_t pos_ = 0;
  int depth_ = 0;
  int abs_depth_ = 0;

  struct DepthGuard {
    int& d;
    explicit DepthGuard(int& depth) : d(depth) {
      if (++d > kMaxDepth) throw ParseError("nested too deeply");
    }
    ~DepthGuard() { --d; }
  };

  void skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool at(std::string_view t) {
    skip();
    return starts_with(s_, pos_, t);
  }
  bool eat(std::string_view t) {
    if (!at(t)) return false;
    pos_ += t.size();
    return true;
  }
  bool at_command(std::string_view name) {  // "\frac" but not "\fraction"
    skip();
    if (!starts_with(s_, pos_, name)) return false;
    std::size_t end = pos_ + name.size();
    return end >= s_.size() || !std::isalpha(static_cast<unsigned char>(s_[end]));
  }
  bool eat_command(std::string_view name) {
    if (!at_command(name)) return false;
    pos_ += name.size();
    return true;
  }
  bool at_end() {
    skip();
    return pos_ >= s_.size();
  }

  // A list: items separated by ',' or ';' (';' groups of ',' items become tuples).
  Value parse_list(int closing) {
    DepthGuard guard(depth_);
    std::vector<std::vector<Value>> groups(1);
    bool semicolons = false;
    while (true) {
      skip();
      if (pos_ >= s_.size() || is_closer()) break;
      groups.back().push_back(parse_relation());
      if (groups.back().size() + groups.size() > kMaxItems) throw ParseError("too many items");
      if (eat(",")) continue;
      if (eat(";")) {
        semicolons = true;
        groups.emplace_back();
        continue;
      }
      break;
    }
    (void)closing;
    std::vector<Value> items;
    if (semicolons) {
      bool nested = false;
      for (auto& g : groups) nested |= g.size() > 1;
      if (nested) {
        for (auto& g : groups) {
          if (g.empty()) continue;
          if (g.size() == 1) {
            items.push_back(std::move(g[0]));
          } else {
            Value t;
            t.kind = Value::Kind::tuple;
            t.items = std::move(g);
            items.push_back(std::move(t));
          }
        }
      } else {
        for (auto& g : groups) {
          for (auto& v : g) items.push_back(std::move(v));
        }
      }
    } else {
      items = std::move(groups[0]);
    }
    if (items.empty()) throw ParseError("empty");
    if (items.size() == 1) return std::move(items[0]);
    Value set;
    set.kind = Value::Kind::set;
    set.items = std::move(items);
    return set;
  }

  bool is_closer() {
    skip();
    if (pos_ >= s_.size()) return true;
    char c = s_[pos_];
    return c == ')' || c == ']' || c == '}' || starts_with(s_, pos_, "\\}") || starts_with(s_, pos_, "\\end") ||
           starts_with(s_, pos_, "\\\\") || c == '&' || (c == '|' && abs_depth_ > 0);
  }

  std::optional<Rel> eat_relation() {
    skip();
    if (eat("<=")) return Rel::le;
    if (eat(">=")) return Rel::ge;
    if (eat("!=")) return Rel::ne;
    if (eat("==")) return Rel::eq;
    if (eat("=")) return Rel::eq;
    if (eat("<")) return Rel::lt;
    if (eat(">")) return Rel::gt;
    return std::nullopt;
  }

  Value parse_relation() {
    DepthGuard guard(depth_);
    Value first = parse_union();
    // "x \in S": the set is the answer.
    if (eat_command("\\in")) {
      Value set = parse_union();
      return set;
    }
    std::optional<Rel> op = eat_relation();
    if (!op) return first;
    Value rel;
    rel.kind = Value::Kind::relation;
    rel.items.push_back(std::move(first));
    while (op) {
      rel.ops.push_back(*op);
      rel.items.push_back(parse_union());
      if (rel.items.size() > kMaxItems) throw ParseError("relation chain too long");
      op = eat_relation();
    }
    return rel;
  }

  Value parse_union() {
    Value first = parse_sum();
    if (!at_command("\\cup")) return first;
    Value u;
    u.kind = Value::Kind::union_of;
    u.items.push_back(std::move(first));
    while (eat_command("\\cup")) {
      u.items.push_back(parse_sum());
      if (u.items.size() > kMaxItems) throw ParseError("union too long");
    }
    return u;
  }

  // Applies `f` to every pair of alternatives ("\pm" makes a value a set of alternatives).
  template <typename F>
  Value combine(const Value& a, const Value& b, F f) {
    auto alternatives = [](const Value& v) -> std::vector<const Value*> {
      std::vector<const Value*> out;
      if (v.kind == Value::Kind::set && v.text == "pm") {
        for (const auto& item : v.items) out.push_back(&item);
      } else {
        out.push_back(&v);
      }
      return out;
    };
    auto as = alternatives(a), bs = alternatives(b);
    for (auto* v : as) require_scalar(*v);
    for (auto* v : bs) require_scalar(*v);
    if (as.size() == 1 && bs.size() == 1) return f(*as[0], *bs[0]);
    Value set;
    set.kind = Value::Kind::set;
    set.text = "pm";
    for (auto* x : as) {
      for (auto* y : bs) set.items.push_back(f(*x, *y));
    }
    if (set.items.size() > kMaxAlternatives) throw ParseError("too many \\pm alternatives");
    return set;
  }

  static void require_scalar(const Value& v) {
    if (v.kind != Value::Kind::scalar) throw ParseError("arithmetic on a non-number");
  }

  static Value add(const Value& a, const Value& b, bool subtract) {
    return scalar(subtract ? a.ex - b.ex : a.ex + b.ex, a.has_float || b.has_float, a.only_symbols && b.only_symbols);
  }
  static Value multiply(const Value& a, const Value& b) {
    Value v = scalar(a.ex * b.ex, a.has_float || b.has_float, a.only_symbols && b.only_symbols);
    return v;
  }
  static Value divide(const Value& a, const Value& b) {
    if (GiNaC::is_a<GiNaC::numeric>(b.ex) && GiNaC::ex_to<GiNaC::numeric>(b.ex).is_zero()) throw ParseError("division by zero");
    return scalar(a.ex / b.ex, a.has_float || b.has_float, a.only_symbols && b.only_symbols);
  }

  Value plus_minus(const Value& a, const Value& b) {
    Value set;
    set.kind = Value::Kind::set;
    set.text = "pm";
    auto add_alt = [&](const Value& x, const Value& y) {
      set.items.push_back(add(x, y, false));
      set.items.push_back(add(x, y, true));
    };
    std::vector<const Value*> as;
    if (a.kind == Value::Kind::set && a.text == "pm") {
      for (auto& i : a.items) as.push_back(&i);
    } else {
      as.push_back(&a);
    }
    require_scalar(b);
    for (auto* x : as) {
      require_scalar(*x);
      add_alt(*x, b);
    }
    if (set.items.size() > kMaxAlternatives) throw ParseError("too many \\pm alternatives");
    return set;
  }

  Value parse_sum() {
    DepthGuard guard(depth_);
    Value left;
    skip();
    if (eat("\\pm") || eat("±")) {
      Value right = parse_term();
      left = plus_minus(scalar(0, false, false), right);
    } else if (eat("\\mp")) {
      Value right = parse_term();
      left = plus_minus(scalar(0, false, false), right);
    } else {
      left = parse_term();
    }
    while (true) {
      skip();
      if (eat("\\pm") || eat("±") || eat("\\mp")) {
        left = plus_minus(left, parse_term());
      } else if (at("+")) {
        ++pos_;
        Value right = parse_term();
        left = combine(left, right, [](const Value& a, const Value& b) { return add(a, b, false); });
      } else if (at("-") && !at("->")) {
        ++pos_;
        Value right = parse_term();
        left = combine(left, right, [](const Value& a, const Value& b) { return add(a, b, true); });
      } else {
        break;
      }
    }
    return left;
  }

  bool starts_implicit_factor() {
    skip();
    if (pos_ >= s_.size()) return false;
    char c = s_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c))) return true;
    if (c == '(' || c == '{') return true;
    if (c == '[') return false;
    if (c == '|') return abs_depth_ == 0;
    if (std::isdigit(static_cast<unsigned char>(c))) return true;
    if (c == '\\') {
      for (std::string_view stop : {"\\pm", "\\mp", "\\in", "\\}", "\\end", "\\\\", "\\cup", "\\cap", "\\to", "\\rightarrow",
                                    "\\Rightarrow", "\\implies", "\\iff"}) {
        if (at_command(stop) || starts_with(s_, pos_, stop)) {
          if (stop == "\\}" || stop == "\\\\") return false;
          if (at_command(stop)) return false;
        }
      }
      return true;
    }
    return false;
  }

  // Skips a unit written after a value: "\text{ cm}^2", "miles". True if one was skipped.
  bool skip_unit() {
    skip();
    std::size_t save = pos_;
    if (starts_with(s_, pos_, "\\text") || starts_with(s_, pos_, "\\mathrm")) {
      std::size_t open = pos_ + (starts_with(s_, pos_, "\\text") ? 5 : 7);
      while (open < s_.size() && s_[open] == ' ') ++open;
      auto group = brace_group(s_, open);
      if (group && is_unit_text(group->first)) {
        pos_ = group->second;
        skip_unit_power();
        return true;
      }
      return false;
    }
    if (std::isalpha(static_cast<unsigned char>(s_[pos_]))) {
      std::size_t end = pos_;
      while (end < s_.size() && std::isalpha(static_cast<unsigned char>(s_[end]))) ++end;
      if (end - pos_ >= 2 && is_unit_text(s_.substr(pos_, end - pos_))) {
        pos_ = end;
        skip_unit_power();
        // only a unit if nothing mathematical follows ("2 cm" but not "2 cm x")
        skip();
        if (pos_ >= s_.size() || is_closer() || s_[pos_] == ',' || s_[pos_] == ';' || s_[pos_] == '/' ||
            s_[pos_] == '=' || s_[pos_] == '%')
          return true;
        pos_ = save;
        return false;
      }
    }
    return false;
  }
  void skip_unit_power() {
    if (pos_ < s_.size() && s_[pos_] == '^') {
      ++pos_;
      if (pos_ < s_.size() && s_[pos_] == '{') {
        auto group = brace_group(s_, pos_);
        if (group) pos_ = group->second;
      } else if (pos_ < s_.size()) {
        ++pos_;
      }
    }
  }

  Value parse_term() {
    DepthGuard guard(depth_);
    skip();
    const std::size_t term_start = pos_;
    Value left = parse_unary();
    // A mixed number: "4\frac{2}{3}" is 4 + 2/3 (MATH's convention), not 4 * 2/3.
    if (at_command("\\frac")) {
      std::string written = text::trim(std::string_view(s_).substr(term_start, pos_ - term_start));
      const bool negative = !written.empty() && written[0] == '-';
      if (negative) written = text::trim(written.substr(1));
      const bool integer_literal = !written.empty() && std::all_of(written.begin(), written.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
      });
      if (integer_literal) {
        const std::size_t save = pos_;
        eat_command("\\frac");
        try {
          Value num = parse_sub(raw_argument());
          Value den = parse_sub(raw_argument());
          auto proper = [](const Value& n, const Value& d) {
            if (n.kind != Value::Kind::scalar || d.kind != Value::Kind::scalar) return false;
            if (!GiNaC::is_a<GiNaC::numeric>(n.ex) || !GiNaC::is_a<GiNaC::numeric>(d.ex)) return false;
            const auto& a = GiNaC::ex_to<GiNaC::numeric>(n.ex);
            const auto& b = GiNaC::ex_to<GiNaC::numeric>(d.ex);
            return a.is_pos_integer() && b.is_pos_integer() && a < b;
          };
          if (proper(num, den)) {
            Value fraction = divide(num, den);
            left = add(left, fraction, negative);
          } else {
            pos_ = save;
          }
        } catch (const ParseError&) {
          pos_ = save;
        }
      }
    }
    while (true) {
      skip();
      if (pos_ >= s_.size()) break;
      if (at("**")) break;  // never: '**' is a power in plain mode and handled in parse_power
      if (at("*")) {
        ++pos_;
        Value right = parse_unary();
        left = combine(left, right, multiply);
      } else if (at("/")) {
        ++pos_;
        Value right = parse_unary();
        left = combine(left, right, divide);
      } else if (at(":") && !plain_) {
        ++pos_;
        Value right = parse_unary();
        left = combine(left, right, divide);
      } else if (left.kind == Value::Kind::scalar && (at("\\text") || at("\\mathrm") || std::isalpha(static_cast<unsigned char>(s_[pos_]))) &&
                 skip_unit()) {
        continue;
      } else if (starts_implicit_factor()) {
        if (at("\\text")) {
          // A \text{} after a value that is not a unit ends the value ("5 \text{ is the answer}").
          break;
        }
        Value right = parse_power();
        left = combine(left, right, multiply);
      } else {
        break;
      }
    }
    return left;
  }

  Value parse_unary() {
    DepthGuard guard(depth_);
    skip();
    if (at("-")) {
      ++pos_;
      Value v = parse_unary();
      return combine(v, scalar(-1, false, true), multiply);
    }
    if (at("+")) {
      ++pos_;
      return parse_unary();
    }
    return parse_power();
  }

  // The argument of ^, _, \frac etc.: a brace group, or a single character / command.
  std::string raw_argument() {
    skip();
    if (pos_ >= s_.size()) throw ParseError("missing argument");
    if (s_[pos_] == '{') {
      auto group = brace_group(s_, pos_);
      if (!group) throw ParseError("unbalanced braces");
      pos_ = group->second;
      return group->first;
    }
    if (s_[pos_] == '\\') {
      std::size_t end = pos_ + 1;
      while (end < s_.size() && std::isalpha(static_cast<unsigned char>(s_[end]))) ++end;
      std::string cmd = s_.substr(pos_, end - pos_);
      pos_ = end;
      return cmd;
    }
    return std::string(1, s_[pos_++]);
  }

  Value parse_sub(const std::string& text) {
    Parser sub(text, plain_);
    sub.depth_ = depth_;
    return sub.parse_all();
  }

  Value power(const Value& base, const Value& exponent) {
    require_scalar(base);
    require_scalar(exponent);
    if (GiNaC::is_a<GiNaC::numeric>(exponent.ex)) {
      const auto& n = GiNaC::ex_to<GiNaC::numeric>(exponent.ex);
      if (!n.is_rational()) throw ParseError("complex exponent");
      const GiNaC::numeric limit = GiNaC::is_a<GiNaC::numeric>(base.ex) ? kMaxNumericExponent : kMaxSymbolicExponent;
      if (GiNaC::abs(n) > limit) throw ParseError("exponent too large");
      if (GiNaC::is_a<GiNaC::numeric>(base.ex) && GiNaC::ex_to<GiNaC::numeric>(base.ex).is_zero() && n.is_negative())
        throw ParseError("division by zero");
      // (2^4096)^4096: the exponent is small but the result would have millions of digits.
      if (GiNaC::is_a<GiNaC::numeric>(base.ex) && GiNaC::ex_to<GiNaC::numeric>(base.ex).is_rational()) {
        const auto& b = GiNaC::ex_to<GiNaC::numeric>(base.ex);
        const double bits = static_cast<double>(b.numer().int_length() + b.denom().int_length());
        if (bits * GiNaC::abs(n).to_double() > 1e6) throw ParseError("number too large");
      }
    }
    Value v = scalar(GiNaC::pow(base.ex, exponent.ex), base.has_float || exponent.has_float, false);
    return v;
  }

  Value parse_power() {
    DepthGuard guard(depth_);
    Value base = parse_postfix();
    skip();
    if (at("^") || (plain_ && at("**"))) {
      pos_ += at("**") ? 2 : 1;
      skip();
      Value exponent;
      if (plain_) {
        exponent = parse_unary_power_operand();
      } else {
        std::string arg = raw_argument();
        exponent = parse_sub(arg);
      }
      return combine(base, exponent, [this](const Value& a, const Value& b) { return power(a, b); });
    }
    return base;
  }
  Value parse_unary_power_operand() {
    if (at("-")) {
      ++pos_;
      Value v = parse_unary_power_operand();
      return combine(v, scalar(-1, false, true), multiply);
    }
    return parse_power();
  }

  Value parse_postfix() {
    Value v = parse_primary();
    while (true) {
      skip();
      if (at("!") && !at("!=")) {
        ++pos_;
        require_scalar(v);
        if (!GiNaC::is_a<GiNaC::numeric>(v.ex) || !GiNaC::ex_to<GiNaC::numeric>(v.ex).is_nonneg_integer() ||
            GiNaC::ex_to<GiNaC::numeric>(v.ex) > kMaxFactorial)
          throw ParseError("factorial of a non-integer or too large a number");
        v = scalar(GiNaC::factorial(v.ex), v.has_float, false);
      } else if (at("%") || eat_percent_word()) {
        if (at("%")) ++pos_;
        require_scalar(v);
        Value p = scalar(v.ex / 100, v.has_float, false);
        p.percent = true;
        p.before_percent = v.ex;
        v = p;
      } else {
        break;
      }
    }
    return v;
  }

  bool eat_percent_word() {
    skip();
    for (std::string_view w : {"percentage", "percent", "pct"}) {
      if (starts_with(s_, pos_, w) && (pos_ + w.size() >= s_.size() || !std::isalpha(static_cast<unsigned char>(s_[pos_ + w.size()])))) {
        pos_ += w.size();
        return true;
      }
    }
    return false;
  }

  Value number_literal() {
    std::size_t start = pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    bool decimal = false;
    if (pos_ + 1 < s_.size() + 1 && pos_ < s_.size() && s_[pos_] == '.' &&
        (pos_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1])))) {
      decimal = true;
      ++pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    std::string digits = s_.substr(start, pos_ - start);
    if (digits.size() > 200) throw ParseError("number too long");
    // Decimals are kept exact (0.1 = 1/10); has_float marks them for the rounding comparison.
    std::size_t dot = digits.find('.');
    std::string whole = dot == std::string::npos ? digits : digits.substr(0, dot) + digits.substr(dot + 1);
    while (whole.size() > 1 && whole[0] == '0') whole.erase(0, 1);
    if (whole.empty()) whole = "0";
    GiNaC::numeric n(whole.c_str());
    if (decimal) {
      std::size_t places = digits.size() - dot - 1;
      n = n / GiNaC::pow(GiNaC::numeric(10), GiNaC::numeric(static_cast<long>(places)));
    }
    return scalar(n, decimal, false);
  }

  GiNaC::ex function_named(const std::string& name, const GiNaC::ex& arg) {
    // CLN's floating point silently loses huge arguments (evalf(exp(10^4000)) is 1.0), so they
    // are refused rather than compared wrongly.
    if (GiNaC::is_a<GiNaC::numeric>(arg) && GiNaC::abs(GiNaC::ex_to<GiNaC::numeric>(arg)) > GiNaC::numeric(1000000))
      throw ParseError("function argument too large");
    if (name == "sin") return GiNaC::sin(arg);
    if (name == "cos") return GiNaC::cos(arg);
    if (name == "tan") return GiNaC::tan(arg);
    if (name == "sec") return 1 / GiNaC::cos(arg);
    if (name == "csc") return 1 / GiNaC::sin(arg);
    if (name == "cot") return GiNaC::cos(arg) / GiNaC::sin(arg);
    if (name == "arcsin" || name == "asin") return GiNaC::asin(arg);
    if (name == "arccos" || name == "acos") return GiNaC::acos(arg);
    if (name == "arctan" || name == "atan") return GiNaC::atan(arg);
    if (name == "sinh") return GiNaC::sinh(arg);
    if (name == "cosh") return GiNaC::cosh(arg);
    if (name == "tanh") return GiNaC::tanh(arg);
    if (name == "ln" || name == "log") return GiNaC::log(arg);
    if (name == "lg") return GiNaC::log(arg) / GiNaC::log(GiNaC::ex(10));
    if (name == "exp") return GiNaC::exp(arg);
    if (name == "sqrt") return GiNaC::sqrt(arg);
    throw ParseError("unknown function " + name);
  }

  static bool is_function_name(const std::string& n) {
    static const std::vector<std::string> names = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan",
                                                   "asin", "acos", "atan", "sinh", "cosh", "tanh", "ln", "log", "lg", "exp", "sqrt"};
    return std::find(names.begin(), names.end(), n) != names.end();
  }

  // \sin^2 x, \log_2 8, \sin(x), \ln x
  Value apply_function(const std::string& name) {
    std::optional<Value> outer_power;
    GiNaC::ex log_base;
    bool has_base = false;
    skip();
    if (name == "log" && at("_")) {
      ++pos_;
      Value b = parse_sub(raw_argument());
      require_scalar(b);
      log_base = b.ex;
      has_base = true;
    }
    if (at("^")) {
      ++pos_;
      outer_power = parse_sub(raw_argument());
    }
    skip();
    Value arg;
    if (at("(")) {
      ++pos_;
      arg = parse_list(')');
      if (!eat(")")) throw ParseError("missing ')'");
    } else {
      arg = parse_power();
    }
    require_scalar(arg);
    GiNaC::ex e = function_named(name, arg.ex);
    if (has_base) e = GiNaC::log(arg.ex) / GiNaC::log(log_base);
    Value v = scalar(e, arg.has_float, false);
    if (outer_power) {
      if (outer_power->kind == Value::Kind::scalar && outer_power->ex.is_equal(-1) && (name == "sin" || name == "cos" || name == "tan")) {
        v = scalar(function_named("arc" + name, arg.ex), arg.has_float, false);
      } else {
        v = power(v, *outer_power);
      }
    }
    return v;
  }

  Value matrix_environment(const std::string& env) {
    // \begin{array}{cc}: skip the column specification
    if (env == "array") {
      skip();
      if (at("{")) raw_argument();
    }
    std::vector<std::vector<Value>> rows(1);
    while (true) {
      skip();
      if (pos_ >= s_.size()) throw ParseError("unterminated matrix");
      if (eat_command("\\end")) {
        raw_argument();
        break;
      }
      Value cell = parse_list(0);
      rows.back().push_back(std::move(cell));
      if (rows.size() * rows.back().size() > kMaxItems) throw ParseError("matrix too large");
      skip();
      if (eat("&")) continue;
      if (eat("\\\\")) {
        skip();
        if (at_command("\\end")) continue;
        rows.emplace_back();
        continue;
      }
      if (!at_command("\\end")) throw ParseError("bad matrix cell");
    }
    while (!rows.empty() && rows.back().empty()) rows.pop_back();
    if (rows.empty()) throw ParseError("empty matrix");
    const std::size_t cols = rows[0].size();
    bool has_float = false;
    GiNaC::matrix m(static_cast<unsigned>(rows.size()), static_cast<unsigned>(cols));
    for (std::size_t r = 0; r < rows.size(); ++r) {
      if (rows[r].size() != cols) throw ParseError("ragged matrix");
      for (std::size_t c = 0; c < cols; ++c) {
        require_scalar(rows[r][c]);
        has_float |= rows[r][c].has_float;
        m(static_cast<unsigned>(r), static_cast<unsigned>(c)) = rows[r][c].ex;
      }
    }
    if (env == "vmatrix") return scalar(m.determinant(), has_float, false);
    return scalar(m, has_float, false);
  }

  Value text_value(const std::string& content) {
    std::string t = text::trim(content);
    if (t.size() == 3 && t.front() == '(' && t.back() == ')') t = t.substr(1, 1);  // "\text{(C)}"
    // \text{5} and \mathrm{e} are math in disguise
    if (!t.empty()) {
      try {
        Value v = parse_sub(t);
        if (t.size() == 1 || v.kind != Value::Kind::scalar || GiNaC::is_a<GiNaC::numeric>(v.ex)) return v;
      } catch (const ParseError&) {
      } catch (const std::exception&) {
      }
    }
    Value v;
    v.kind = Value::Kind::text;
    v.text = text::to_lower(t);
    v.only_symbols = true;
    return v;
  }

  Value symbol_with_subscript(std::string name) {
    skip();
    if (at("_")) {
      ++pos_;
      std::string sub = raw_argument();
      std::string clean;
      for (char c : sub) {
        if (!std::isspace(static_cast<unsigned char>(c)) && c != '{' && c != '}') clean += c;
      }
      name += "_" + clean;
    }
    if (name.size() > 64) throw ParseError("symbol name too long");
    return scalar(symbol_named(name), false, true);
  }

  Value parse_primary() {
    DepthGuard guard(depth_);
    skip();
    if (pos_ >= s_.size()) throw ParseError("unexpected end");
    const char c = s_[pos_];
    if (std::isdigit(static_cast<unsigned char>(c)) || (c == '.' && pos_ + 1 < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_ + 1])))) {
      return number_literal();
    }
    if (c == '(' || c == '[') {
      ++pos_;
      Value inner = parse_list(c);
      skip();
      if (pos_ >= s_.size()) throw ParseError("missing closing bracket");
      char close = s_[pos_];
      if (close != ')' && close != ']') throw ParseError("bad closing bracket");
      ++pos_;
      if (inner.kind == Value::Kind::set && inner.text != "pm") {
        if (inner.items.size() == 2 && !(c == '[' && close == ']' && false)) {
          if (c == '(' && close == ')') {
            Value t;
            t.kind = Value::Kind::tuple;
            t.items = std::move(inner.items);
            t.paren_pair = true;
            return t;
          }
          Value interval;
          interval.kind = Value::Kind::interval;
          interval.items = std::move(inner.items);
          interval.left_open = c == '(';
          interval.right_open = close == ')';
          for (auto& end : interval.items) require_scalar(end);
          return interval;
        }
        Value t;
        t.kind = Value::Kind::tuple;
        t.items = std::move(inner.items);
        return t;
      }
      if (c == '(' && close == ')') return inner;
      if (c == '[' && close == ']') return inner;
      throw ParseError("mismatched brackets");
    }
    if (c == '{') {
      auto group = brace_group(s_, pos_);
      if (!group) throw ParseError("unbalanced braces");
      pos_ = group->second;
      if (text::trim(group->first).empty()) throw ParseError("empty group");
      return parse_sub(group->first);
    }
    if (c == '|') {
      ++pos_;
      ++abs_depth_;
      Value inner = parse_sum();
      --abs_depth_;
      if (!eat("|")) throw ParseError("missing '|'");
      require_scalar(inner);
      return scalar(GiNaC::abs(inner.ex), inner.has_float, inner.only_symbols);
    }
    if (c == '\\') return parse_command();
    if (std::isalpha(static_cast<unsigned char>(c))) {
      // Multi-letter function names written without a backslash in plain text.
      std::size_t end = pos_;
      while (end < s_.size() && std::isalpha(static_cast<unsigned char>(s_[end]))) ++end;
      std::string word = s_.substr(pos_, end - pos_);
      for (const std::string& f : {std::string("arcsin"), std::string("arccos"), std::string("arctan"), std::string("sqrt"),
                                   std::string("sinh"), std::string("cosh"), std::string("tanh"), std::string("sin"),
                                   std::string("cos"), std::string("tan"), std::string("log"), std::string("exp"), std::string("ln")}) {
        if (word.rfind(f, 0) == 0 && (word.size() == f.size())) {
          pos_ = end;
          return apply_function(f);
        }
      }
      if (word == "pi") {
        pos_ = end;
        return scalar(GiNaC::Pi, false, false);
      }
      if (word == "infty" || word == "inf" || word == "infinity") {
        pos_ = end;
        return scalar(infinity_symbol(), false, false);
      }
      ++pos_;
      if (c == 'e' && !at("_")) return scalar(GiNaC::exp(GiNaC::ex(1)), false, true);
      return symbol_with_subscript(std::string(1, c));
    }
    throw ParseError(std::string("unexpected '") + c + "'");
  }

  Value parse_sum_command() {
    skip();
    if (!eat("_")) throw ParseError("\\sum needs a lower bound");
    std::string lower = raw_argument();
    std::size_t eq = lower.find('=');
    if (eq == std::string::npos) throw ParseError("\\sum needs k=a below it");
    Value index = parse_sub(lower.substr(0, eq));
    Value from = parse_sub(lower.substr(eq + 1));
    skip();
    if (!eat("^")) throw ParseError("\\sum needs an upper bound");
    Value to = parse_sub(raw_argument());
    Value body = parse_term();
    for (const Value* v : {&index, &from, &to, &body}) require_scalar(*v);
    return scalar(distil_sum(body.ex, index.ex, from.ex, to.ex), body.has_float, false);
  }

  Value parse_command() {
    std::size_t end = pos_ + 1;
    while (end < s_.size() && std::isalpha(static_cast<unsigned char>(s_[end]))) ++end;
    if (end == pos_ + 1) {
      // "\{" set braces
      if (starts_with(s_, pos_, "\\{")) {
        pos_ += 2;
        skip();
        Value set;
        set.kind = Value::Kind::set;
        if (!eat("\\}")) {
          Value inner = parse_list('}');
          if (!eat("\\}")) throw ParseError("missing '\\}'");
          if (inner.kind == Value::Kind::set && inner.text != "pm") set.items = std::move(inner.items);
          else set.items.push_back(std::move(inner));
        }
        return set;
      }
      throw ParseError("unknown escape");
    }
    const std::string cmd = s_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end;
    if (cmd == "frac" || cmd == "over") {
      Value num = parse_sub(raw_argument());
      Value den = parse_sub(raw_argument());
      return combine(num, den, divide);
    }
    if (cmd == "binom") {
      Value n = parse_sub(raw_argument());
      Value k = parse_sub(raw_argument());
      require_scalar(n);
      require_scalar(k);
      if (!GiNaC::is_a<GiNaC::numeric>(n.ex) || !GiNaC::is_a<GiNaC::numeric>(k.ex) ||
          GiNaC::ex_to<GiNaC::numeric>(n.ex) > kMaxFactorial)
        throw ParseError("binomial of non-numbers");
      return scalar(GiNaC::binomial(GiNaC::ex_to<GiNaC::numeric>(n.ex), GiNaC::ex_to<GiNaC::numeric>(k.ex)), false, false);
    }
    if (cmd == "sqrt") {
      skip();
      std::optional<Value> index;
      if (at("[")) {
        std::size_t close = s_.find(']', pos_);
        if (close == std::string::npos) throw ParseError("missing ']'");
        index = parse_sub(s_.substr(pos_ + 1, close - pos_ - 1));
        pos_ = close + 1;
      }
      Value radicand = parse_sub(raw_argument());
      if (index) {
        return combine(radicand, *index, [this](const Value& a, const Value& n) {
          return power(a, scalar(1 / n.ex, n.has_float, false));
        });
      }
      require_scalar(radicand);
      return scalar(GiNaC::sqrt(radicand.ex), radicand.has_float, false);
    }
    if (is_function_name(cmd)) return apply_function(cmd);
    if (cmd == "operatorname") {
      std::string name = raw_argument();
      if (is_function_name(name)) return apply_function(name);
      return symbol_with_subscript(name);
    }
    if (cmd == "sum") return parse_sum_command();
    if (cmd == "pi") return scalar(GiNaC::Pi, false, false);
    if (cmd == "infty" || cmd == "infin") return scalar(infinity_symbol(), false, false);
    if (cmd == "e") return scalar(GiNaC::exp(GiNaC::ex(1)), false, false);
    if (cmd == "text" || cmd == "mathrm") {
      std::string content = raw_argument();
      if (cmd == "mathrm") return parse_sub(content);
      return text_value(content);
    }
    if (cmd == "boxed" || cmd == "fbox" || cmd == "mathbf" || cmd == "overline" || cmd == "hat" || cmd == "vec") {
      return parse_sub(raw_argument());
    }
    if (cmd == "begin") {
      std::string env = raw_argument();
      if (env == "pmatrix" || env == "bmatrix" || env == "matrix" || env == "array" || env == "vmatrix" ||
          env == "Bmatrix" || env == "smallmatrix")
        return matrix_environment(env);
      throw ParseError("unsupported environment " + env);
    }
    static const std::vector<std::string> greek = {
        "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa",
        "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
        "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"};
    if (std::find(greek.begin(), greek.end(), cmd) != greek.end()) return symbol_with_subscript(cmd);
    throw ParseError("unknown command \\" + cmd);
  }
};

}  // namespace

std::optional<Value> parse_latex(std::string_view latex, bool plain_expression) {
  std::lock_guard lock(ginac_mutex());
  if (latex.size() > kMaxLatexChars * 4) return std::nullopt;
  std::string normalized = normalize_latex(latex);
  if (normalized.empty() || normalized.size() > kMaxLatexChars) return std::nullopt;
  if (symbol_table().size() > kMaxSymbols) symbol_table().clear();
  auto attempt = [&](const std::string& text) -> std::optional<Value> {
    try {
      Parser parser(text, plain_expression);
      return parser.parse_all();
    } catch (const std::exception&) {  // ParseError, GiNaC's domain/pole errors, bad_alloc of a bomb
      return std::nullopt;
    }
  };
  if (auto v = attempt(normalized)) return v;
  // "1 = \zzz = x = 0": when the whole chain fails, its last part may still be the answer.
  if (normalized.find(',') == std::string::npos && normalized.find(';') == std::string::npos) {
    std::vector<std::size_t> equals;
    for (std::size_t i = 0; i < normalized.size(); ++i) {
      if (normalized[i] == '=' && (i == 0 || (normalized[i - 1] != '<' && normalized[i - 1] != '>' && normalized[i - 1] != '!')))
        equals.push_back(i);
    }
    if (equals.size() >= 2) return attempt(normalized.substr(equals.back() + 1));
  }
  return std::nullopt;
}

}  // namespace distil::graders::math
