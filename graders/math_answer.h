// Math answers: extraction from a response, parsing LaTeX into GiNaC values, and equivalence.
// Internal to graders/ (the math grader and its tests use it).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distil::graders::math {

struct CompareOptions {
  int float_places = 6;           // both sides rounded to this many decimals when one is a float
  bool strict = true;             // false: variables are matched by position (f(x) == f(y))
  bool allow_set_relation = false;  // a predicted inequality may match a reference interval
};

// Which kinds of answers extraction looks for.
struct ExtractTargets {
  bool latex = true;  // \boxed{}, $...$, \[...\], \(...\), \frac{a}{b}
  bool expr = true;   // plain numbers and arithmetic ("1,000.5", "10/9")
};

// One extracted answer: the text and what it came from.
struct Candidate {
  std::string text;
  bool latex = true;     // parse as LaTeX (false: plain expression)
  bool percent = false;  // followed by "%", "percent", "pct"
  std::string source;    // "boxed", "final_answer", "answer", "latex", "number"
  std::size_t priority = 0;
  std::size_t end = 0;
  std::size_t start = 0;
};

// All candidates in the order they should be tried (best first): boxed answers, then
// "final answer is", then "answer:", then the last math span / number.
std::vector<Candidate> extract_candidates(std::string_view text, const ExtractTargets& targets);

// The parsed form of an extracted answer, opaque to callers.
struct ParsedAnswer;
struct Answer {
  std::string text;        // the extracted text (what "extracted" shows)
  std::string normalized;  // normalised text, used for the string comparison fallback
  std::string source;      // where extraction found it ("boxed", "answer", "latex", "number", ...)
  std::shared_ptr<const ParsedAnswer> parsed;  // null when the text is not parseable math
};

// The first candidate that parses (plus, like Math-Verify, the first candidate's text as a string
// fallback). Empty when nothing was found.
std::vector<Answer> extract_answers(std::string_view text, const ExtractTargets& targets);
// Parses a bare reference answer ("\frac{1}{2}", "(1, 2]", "x = 3").
Answer parse_reference(std::string_view latex);

// Any extracted gold answer equal to any predicted one. Never throws; bounded in time and size.
bool equivalent(const std::vector<Answer>& gold, const std::vector<Answer>& predicted, const CompareOptions& options);

}  // namespace distil::graders::math
