// `distil-env run --lang python --file prog.py [--stdin FILE] [--time-limit S] [--memory-limit MB]`
#include "sandbox/cli.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "sandbox/sandbox.h"

namespace distil::sandbox {
namespace {

struct RunOptions {
  std::string language = "python";
  std::string file;
  std::string stdin_file;
  double time_limit_s = 6.0;
  double wall_limit_s = 0.0;
  std::size_t memory_limit_mb = 512;
  std::size_t output_limit_bytes = 64 * 1024;
  std::string python = "/usr/bin/python3";
  std::string minimum = "basic";
  bool no_namespaces = false;
  bool show_isolation = false;
  std::vector<std::string> args;
};

bool read_file(const std::string& path, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot open '" + path + "'";
    return false;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  out = buffer.str();
  return true;
}

int run_command(const RunOptions& o) {
  auto fail = [](const std::string& field, const std::string& message) {
    std::cout << nlohmann::json{{"error", {{"code", "invalid_argument"}, {"field", field}, {"message", message}}}}.dump()
              << "\n";
    return 2;
  };
  Program program;
  try {
    program.language = language_from_string(o.language);
  } catch (const std::exception& e) {
    return fail("--lang", e.what());
  }
  std::string error;
  if (!read_file(o.file, program.source, error)) return fail("--file", error);
  std::string input;
  if (!o.stdin_file.empty() && !read_file(o.stdin_file, input, error)) return fail("--stdin", error);
  program.args = o.args;

  Config config;
  config.python_path = o.python;
  config.use_namespaces = !o.no_namespaces;
  config.prespawned = 0;          // one run: processes prepared for later runs would only be thrown away
  config.probe_at_start = false;  // the run itself is the probe
  if (o.minimum == "basic") config.minimum = MinimumIsolation::basic;
  else if (o.minimum == "namespaces") config.minimum = MinimumIsolation::namespaces;
  else if (o.minimum == "full") config.minimum = MinimumIsolation::full;
  else return fail("--minimum", "expected basic, namespaces or full, got '" + o.minimum + "'");

  Limits limits;
  limits.cpu_time_s = o.time_limit_s;
  limits.wall_time_s = o.wall_limit_s;
  limits.memory_mb = o.memory_limit_mb;
  limits.output_bytes = o.output_limit_bytes;
  try {
    Sandbox sandbox(config);
    nlohmann::json out = to_json(sandbox.run(program, input, limits));
    if (o.show_isolation) out["isolation"] = to_json(sandbox.isolation());
    std::cout << out.dump() << "\n";
    return out["verdict"] == "ok" ? 0 : 1;
  } catch (const std::exception& e) {
    std::cout << nlohmann::json{{"error", {{"code", "sandbox_unavailable"}, {"message", e.what()}}}}.dump() << "\n";
    return 3;
  }
}

}  // namespace

void add_run_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "Run one program in the sandbox and print the result as JSON");
  cmd->add_option("--lang", options->language, "python or cpp")->capture_default_str();
  cmd->add_option("--file", options->file, "program source file")->required();
  cmd->add_option("--stdin", options->stdin_file, "file whose content is the program's stdin");
  cmd->add_option("--time-limit", options->time_limit_s, "CPU seconds")->check(CLI::Range(0.01, 3600.0))->capture_default_str();
  cmd->add_option("--wall-limit", options->wall_limit_s, "wall-clock seconds (0: 2x time limit + 1)")
      ->check(CLI::Range(0.0, 7200.0));
  cmd->add_option("--memory-limit", options->memory_limit_mb, "MiB of address space")
      ->check(CLI::Range(16, 1 << 20))->capture_default_str();
  cmd->add_option("--output-limit", options->output_limit_bytes, "bytes kept of stdout and of stderr, each")
      ->check(CLI::Range(1, 1 << 30))->capture_default_str();
  cmd->add_option("--python", options->python, "absolute path of the interpreter")->capture_default_str();
  cmd->add_option("--minimum", options->minimum, "refuse to run below this isolation: basic, namespaces, full")
      ->capture_default_str();
  cmd->add_flag("--no-namespaces", options->no_namespaces, "run with seccomp + rlimits only");
  cmd->add_flag("--isolation", options->show_isolation, "add the isolation report to the output");
  cmd->add_option("args", options->args, "arguments passed to the program");
  cmd->callback([options, &exit_code]() { exit_code = run_command(*options); });
}

}  // namespace distil::sandbox
