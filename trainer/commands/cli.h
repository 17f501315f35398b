// Subcommands of distil-train and the distil-eval program (distil-demo's are in
// trainer/demo/demo_commands.h). Each add_* registers one subcommand;
// when it runs, its exit status is written to `exit_code`.
#pragma once
#include <CLI/CLI.hpp>
namespace distil::trainer {
void add_tokenize_command(CLI::App& app, int& exit_code);  // tokenize_command.cc (no LibTorch)
void add_chat_template_command(CLI::App& app, int& exit_code);  // chat_template_command.cc (no LibTorch)
void add_train_command(CLI::App& app, int& exit_code);     // train_commands.cc (training loop)
void add_memory_plan_command(CLI::App& app, int& exit_code);  // train_commands.cc (per-rank memory plan)
void add_plot_command(CLI::App& app, int& exit_code);      // train_commands.cc (metrics JSONL -> SVG)
void configure_eval_app(CLI::App& app, int& exit_code);    // distil-eval's own options
}  // namespace distil::trainer
