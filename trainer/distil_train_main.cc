// distil-train: train a language model from rich feedback (DistIL and baselines).
#include <CLI/CLI.hpp>

#include <cstring>

#include "trainer/cli.h"
#include "trainer/reproducible.h"

int main(int argc, char** argv) {
  // The demo's pretrained model must come out the same on every machine (trainer/reproducible.h).
  const bool pretraining = argc > 1 && std::strcmp(argv[1], "demo-pretrain") == 0;
  distil::trainer::pin_kernels_if_requested(argc, argv, pretraining);
  CLI::App app{"distil-train: DistIL and baseline training against distil-env feedback servers"};
  app.require_subcommand(1);
  int exit_code = 0;
  distil::trainer::add_train_command(app, exit_code);
  distil::trainer::add_tokenize_command(app, exit_code);
  distil::trainer::add_chat_template_command(app, exit_code);
  distil::trainer::add_plot_command(app, exit_code);
  distil::trainer::add_demo_commands(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
