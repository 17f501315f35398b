// distil-env: the feedback-environment server and its debugging commands.
#include <CLI/CLI.hpp>

#include "env_server/cli.h"
#include "graders/cli.h"
#include "sandbox/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"distil-env: secure feedback environment (sandboxed code runs, math/science grading)"};
  app.require_subcommand(1);
  int exit_code = 0;
  distil::env::add_serve_command(app, exit_code);
  distil::graders::add_grade_command(app, exit_code);
  distil::graders::add_convert_command(app, exit_code);
  distil::sandbox::add_run_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
