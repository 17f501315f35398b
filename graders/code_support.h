// Pieces of the code grader that need no sandbox: code block extraction and the LiveCodeBench
// output comparisons. Internal to graders/ (tested directly).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sandbox/sandbox.h"

namespace distil::graders::code {

struct CodeBlock {
  bool found = false;
  bool unterminated = false;  // an opening ``` with no closing one (the response was cut off)
  std::string language;       // the fence's tag, lower case ("" if none)
  std::string code;
};
// The last complete fenced block (``` or ~~~, optional language tag).
CodeBlock last_code_block(std::string_view text);

// The block's tag ("cpp", "c++", "python", ...) or metadata.language; Python by default.
sandbox::Language language_for(const std::string& tag, const nlohmann::json& metadata);

// LiveCodeBench stdin rule: both outputs stripped and split into lines; same number of lines;
// each pair of (stripped) lines equal, or equal token by token as exact decimals.
bool stdin_outputs_match(std::string_view actual, std::string_view expected);
// (Functional results are compared in code_values.h, with Python's == semantics.)

bool is_python_identifier(const std::string& s);

}  // namespace distil::graders::code
