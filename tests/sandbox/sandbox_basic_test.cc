// Core behaviour of one sandboxed run: output, exit codes, stdin, verdicts, limits.
#include <gtest/gtest.h>

#include "sandbox/sandbox.h"

namespace distil::sandbox {
namespace {

Sandbox& shared_sandbox() {
  static Sandbox sandbox{Config{}};
  return sandbox;
}

Program python(std::string source) {
  Program p;
  p.source = std::move(source);
  return p;
}

Limits fast_limits() {
  Limits l;
  l.cpu_time_s = 2;
  l.wall_time_s = 3;
  l.memory_mb = 256;
  return l;
}

TEST(SandboxBasic, HelloWorld) {
  auto r = shared_sandbox().run(python("print('hello')"), "", fast_limits());
  EXPECT_EQ(r.verdict, Verdict::ok) << to_json(r).dump();
  EXPECT_EQ(r.stdout_data, "hello\n");
  EXPECT_EQ(r.exit_code, 0);
}

TEST(SandboxBasic, ReadsStdin) {
  auto r = shared_sandbox().run(python("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))"),
                                "1 2 3\n4\n", fast_limits());
  EXPECT_EQ(r.verdict, Verdict::ok) << to_json(r).dump();
  EXPECT_EQ(r.stdout_data, "10\n");
}

TEST(SandboxBasic, ExceptionIsRuntimeErrorWithTraceback) {
  auto r = shared_sandbox().run(python("x = 1\nraise ValueError('bad input')\n"), "", fast_limits());
  EXPECT_EQ(r.verdict, Verdict::runtime_error);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.stderr_data.find("ValueError: bad input"), std::string::npos) << r.stderr_data;
  EXPECT_NE(r.stderr_data.find("line 2"), std::string::npos) << r.stderr_data;
}

}  // namespace
}  // namespace distil::sandbox
