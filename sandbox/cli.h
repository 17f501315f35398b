// `distil-env run`: one sandboxed run printed as a JSON object.
#pragma once
#include <CLI/CLI.hpp>
namespace distil::sandbox {
// Adds the subcommand; when it runs, its process exit status is written to `exit_code`.
void add_run_command(CLI::App& app, int& exit_code);
}  // namespace distil::sandbox
