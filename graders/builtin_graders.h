// Factories of the graders shipped with distil (internal to graders/; Registry::builtin() uses them).
#pragma once

#include <memory>

#include "graders/grader.h"

namespace distil::graders {

std::unique_ptr<Grader> make_science_grader();
std::unique_ptr<Grader> make_math_grader();
std::unique_ptr<Grader> make_code_grader();
std::unique_ptr<Grader> make_script_grader();

}  // namespace distil::graders
