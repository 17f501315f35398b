// Parsed math answers (GiNaC-backed) and their comparison. Internal to the math grader.
#pragma once

#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ginac/ginac.h>

#include "graders/math_answer.h"

namespace distil::graders::math {

// GiNaC's reference counts are not atomic, so every GiNaC object is created, compared and
// destroyed under this lock. Math grading is short (well under a millisecond per answer).
std::recursive_mutex& ginac_mutex();

enum class Rel { eq, ne, lt, le, gt, ge, approx };

struct Value {
  enum class Kind { scalar, tuple, set, interval, relation, text, union_of };
  Kind kind = Kind::scalar;
  GiNaC::ex ex;                 // scalar (numbers, expressions, matrices)
  std::vector<Value> items;     // tuple/set/union elements, relation operands, interval ends
  std::vector<Rel> ops;         // relation chain operators (items.size() - 1 of them)
  bool left_open = false, right_open = false;
  bool paren_pair = false;      // "(a, b)": a pair that may also mean an open interval
  bool has_float = false;       // a decimal literal took part: compare after rounding
  bool only_symbols = false;    // no number literals (so "f(x) = 3" is an assignment)
  bool percent = false;
  GiNaC::ex before_percent;     // the value without the /100 when percent
  std::string text;             // Kind::text
};

struct ParsedAnswer {
  Value value;
  ~ParsedAnswer();
};

// Normalises and parses; nullopt when the text is not math this parser understands.
std::optional<Value> parse_latex(std::string_view latex, bool plain_expression);
std::string normalize_for_string_compare(std::string_view latex);
bool values_equal(const Value& gold, const Value& predicted, const CompareOptions& options);

}  // namespace distil::graders::math
