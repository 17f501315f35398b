// `distil-env grade`: grade one response from the shell, printing the server's result object.
// `distil-env convert`: turn public benchmark files into task JSONL.
#pragma once
#include <CLI/CLI.hpp>
namespace distil::graders {
void add_grade_command(CLI::App& app, int& exit_code);
void add_convert_command(CLI::App& app, int& exit_code);
}  // namespace distil::graders
