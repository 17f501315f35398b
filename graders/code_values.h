// Python plain values on the grader's side (internal to graders/): the functional runner's tagged
// JSON results and the tests' expected outputs (read as Python's json.loads reads them) are
// compared here, outside the candidate's process, with Python's == semantics. Tested directly.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distil::graders::code {

struct PyValue {
  enum class Kind { none, boolean, integer, floating, string, list, tuple, dict, set, frozenset };
  Kind kind = Kind::none;
  bool boolean = false;
  std::string text;      // integer: canonical decimal ("-12", "0"); floating: its literal; string: UTF-8
  double number = 0;     // floating
  std::vector<PyValue> items;                          // list, tuple, set, frozenset
  std::vector<std::pair<PyValue, PyValue>> entries;    // dict, in order
};

// Python's json.loads (NaN, Infinity and -Infinity accepted, integers exact at any size, depth
// at most 4100 JSON levels); nullopt for anything else.
std::optional<PyValue> parse_python_json(std::string_view text);

// The functional runner's tagged JSON: {"i": digits} big int, {"f": "inf"|"-inf"|"nan"},
// {"t": [...]} tuple, {"d": [[k, v], ...]} dict, {"s": [...]} set, {"z": [...]} frozenset; any
// other object is malformed (nullopt).
std::optional<PyValue> parse_tagged_result(std::string_view text);

// Python's a == b for plain values: bool, int and float compare as numbers, exactly (1 == True,
// 2**53 + 1 != 2.0**53, nan != nan); list only equals list and tuple only tuple; dicts by key
// and value; set and frozenset by membership.
bool python_equal(const PyValue& a, const PyValue& b);

// Python's repr() of the value (what the feedback shows as the program's output).
std::string python_repr(const PyValue& v, std::size_t max_chars = 1 << 20);

}  // namespace distil::graders::code
