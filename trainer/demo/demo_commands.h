// distil-demo's subcommands: data (the built-in tasks), pretrain (the tiny model), probe (what
// each teacher context says at every token). When one runs, its exit status goes to `exit_code`.
#pragma once
#include <CLI/CLI.hpp>
namespace distil::trainer {
void add_demo_commands(CLI::App& app, int& exit_code);
}  // namespace distil::trainer
