// distil-demo: the built-in demo's tasks and tiny pretrained model. A program of its own because
// it grades with the graders and the sandbox in-process; distil-train and distil-eval link only
// the env client.
#include <CLI/CLI.hpp>

#include <cstring>

#include "trainer/demo/demo_commands.h"
#include "trainer/model/linear_kernel.h"
#include "trainer/reproducible.h"

int main(int argc, char** argv) {
  // The demo's pretrained model must come out the same on every machine (trainer/reproducible.h).
  const bool pretraining = argc > 1 && std::strcmp(argv[1], "pretrain") == 0;
  distil::trainer::pin_kernels_if_requested(argc, argv, pretraining);
  // Freed buffers stay in the process: no page faults per step (DISTIL_KEEP_FREED_MEMORY=0: glibc default).
  distil::model::keep_freed_cpu_memory();
  CLI::App app{"distil-demo: the built-in demo's task domains and its tiny pretrained model"};
  app.require_subcommand(1);
  int exit_code = 0;
  distil::trainer::add_demo_commands(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
