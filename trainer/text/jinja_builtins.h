// Internal to the Jinja engine: the builtins the evaluator (trainer/text/jinja_render.cc) calls,
// defined in trainer/text/jinja_builtins.cc with @huggingface/jinja's semantics.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "trainer/text/jinja_ast.h"
#include "trainer/text/jinja_value.h"

namespace distil::text::jinja {

// The work and size one render may still do (Limits), shared by the evaluator and the builtins.
class Budget {
 public:
  explicit Budget(const Limits& limits) : limits_(limits) {}
  void step(int line);                            // one evaluation step or loop iteration
  void check_size(size_t bytes, int line) const;  // a string or list being built
  const Limits& limits() const { return limits_; }

 private:
  const Limits& limits_;
  uint64_t steps_ = 0;
};

bool truthy(const Value& v);
bool loose_equal(const Value& a, const Value& b);   // `==`: JavaScript's ==
bool strict_equal(const Value& a, const Value& b);  // `in` on lists, `equalto`, `unique`: ===
// The positions a slice [start:stop:step] takes from n items (negative bounds count from the end).
std::vector<int64_t> slice_indices(int64_t n, std::optional<int64_t> start,
                                   std::optional<int64_t> stop, int64_t step);

std::string display(const Value& v, int line, const Budget& budget);  // what {{ v }} prints
std::string json_text(const Value& v, const JsonOptions& options, bool undefined_as_null, int line,
                      const Budget& budget);
// The text of a primitive in `+` and `~` (JavaScript's value.toString(): floats print without .0).
std::string concat_text(const Value& v, int line);

Value make_function(std::string name, std::function<Value(const Args&, int)> call);
// true/false/none (any case), raise_exception, namespace, range, strftime_now.
std::vector<std::pair<std::string, Value>> global_variables(Budget& budget);
// `s.name` / `d.name` when no key of d is `name`: a bound method, `length`, or undefined.
Value string_attribute(const Value& s, const std::string& name, Budget& budget);
Value dict_attribute(const Value& object, const std::string& name);

bool apply_test(const std::string& name, const Value& v, int line);
// `filter` is the Filter node (its name, line, parentheses and argument expressions), `args` its
// evaluated arguments.
Value apply_filter(const Node& filter, const Value& operand, const Args& args, Budget& budget);

}  // namespace distil::text::jinja
