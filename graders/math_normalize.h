// The LaTeX normaliser of math answers (math_normalize.cc): the surface forms that mean the same
// thing become one form, so the parser (math_parse.cc) sees one spelling of each. Internal to
// the math grader.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace distil::graders::math {

std::string normalize_latex(std::string_view in);

// True if `prefix` occurs in `s` at `pos` (used by the normaliser and the parser).
inline bool starts_with(std::string_view s, std::size_t pos, std::string_view prefix) {
  return s.size() >= pos + prefix.size() && s.compare(pos, prefix.size(), prefix) == 0;
}

}  // namespace distil::graders::math
