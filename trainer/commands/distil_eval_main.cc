// distil-eval: sample n responses per held-out prompt, grade them, report avg@n/pass@k/maj@k.
#include <CLI/CLI.hpp>

#include "trainer/commands/cli.h"
#include "trainer/model/linear_kernel.h"
#include "trainer/reproducible.h"

int main(int argc, char** argv) {
  distil::trainer::pin_kernels_if_requested(argc, argv, false);  // DISTIL_REPRODUCIBLE=1
  // Freed buffers stay in the process: no page faults per step (DISTIL_KEEP_FREED_MEMORY=0: glibc default).
  distil::model::keep_freed_cpu_memory();
  CLI::App app{"distil-eval: evaluate a model on task files against distil-env feedback servers"};
  int exit_code = 0;
  distil::trainer::configure_eval_app(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
