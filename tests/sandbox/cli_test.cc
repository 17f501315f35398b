// `distil-env run` (sandbox/cli.h) parsed and run in-process, its JSON read back.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sandbox/cli.h"

namespace distil::sandbox {
namespace {

struct CliRun {
  int exit_code = -1;
  nlohmann::json output;
};

CliRun run_cli(std::vector<std::string> args) {
  CLI::App app{"test"};
  app.require_subcommand(1);
  CliRun result;
  add_run_command(app, result.exit_code);
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments reversed
  std::ostringstream captured;
  std::streambuf* old = std::cout.rdbuf(captured.rdbuf());
  try {
    app.parse(args);
  } catch (...) {
    std::cout.rdbuf(old);
    throw;
  }
  std::cout.rdbuf(old);
  result.output = nlohmann::json::parse(captured.str());
  return result;
}

std::string write_temp(const std::string& name, const std::string& content) {
  const std::string path = "/tmp/distil_cli_test_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << content;
  return path;
}

TEST(SandboxCli, RunsAProgramWithStdinAndPrintsOneJsonObject) {
  const auto prog = write_temp("sum.py", "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n");
  const auto input = write_temp("in.txt", "1 2 3\n");
  const auto r = run_cli({"run", "--lang", "python", "--file", prog, "--stdin", input, "--time-limit", "2",
                          "--memory-limit", "128", "--isolation"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output["verdict"], "ok");
  EXPECT_EQ(r.output["stdout"], "6\n");
  EXPECT_TRUE(r.output.contains("isolation"));
  unlink(prog.c_str());
  unlink(input.c_str());
}

TEST(SandboxCli, NonOkVerdictExitsOne) {
  const auto prog = write_temp("loop.py", "while True: pass\n");
  const auto r = run_cli({"run", "--file", prog, "--time-limit", "0.5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.output["verdict"], "time_limit");
  unlink(prog.c_str());
}

TEST(SandboxCli, BadArgumentsNameTheOption) {
  auto r = run_cli({"run", "--file", "/nonexistent/prog.py"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output["error"]["field"], "--file");
  const auto prog = write_temp("x.py", "print(1)\n");
  r = run_cli({"run", "--lang", "cobol", "--file", prog});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output["error"]["field"], "--lang");
  r = run_cli({"run", "--minimum", "extreme", "--file", prog});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.output["error"]["field"], "--minimum");
  EXPECT_THROW(run_cli({"run", "--file", prog, "--time-limit", "-4"}), CLI::ValidationError);
  unlink(prog.c_str());
}

}  // namespace
}  // namespace distil::sandbox
