// distil-train: train a language model from rich feedback (DistIL and baselines).
#include <CLI/CLI.hpp>

#include "trainer/commands/cli.h"
#include "trainer/model/linear_kernel.h"
#include "trainer/reproducible.h"

int main(int argc, char** argv) {
  // DISTIL_REPRODUCIBLE=1 pins the CPU kernels (trainer/reproducible.h).
  distil::trainer::pin_kernels_if_requested(argc, argv, /*always=*/false);
  // Freed buffers stay in the process: no page faults per step (DISTIL_KEEP_FREED_MEMORY=0: glibc default).
  distil::model::keep_freed_cpu_memory();
  CLI::App app{"distil-train: DistIL and baseline training against distil-env feedback servers"};
  app.require_subcommand(1);
  int exit_code = 0;
  distil::trainer::add_train_command(app, exit_code);
  distil::trainer::add_tokenize_command(app, exit_code);
  distil::trainer::add_chat_template_command(app, exit_code);
  distil::trainer::add_memory_plan_command(app, exit_code);
  distil::trainer::add_plot_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
