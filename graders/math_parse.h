// What the parser (math_parse.cc) shares with the comparer (math_compare.cc). Internal to the
// math grader; call with ginac_mutex() held.
#pragma once

#include <string>

#include <ginac/ginac.h>

#include "graders/math_value.h"

namespace distil::graders::math {

// GiNaC symbols compare by identity, so equal names must map to one symbol object: this one.
GiNaC::ex symbol_named(const std::string& name);
// The symbol "oo" that infinity parses to.
const GiNaC::ex& infinity_symbol();
// A scalar Value of `e`.
Value scalar(GiNaC::ex e, bool has_float, bool only_symbols);

}  // namespace distil::graders::math
