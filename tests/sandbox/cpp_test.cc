// C++ programs: compiled with g++ inside a sandbox, the binary run in another.
#include <gtest/gtest.h>

#include "sandbox/sandbox.h"

namespace distil::sandbox {
namespace {

Sandbox& sandbox() {
  static Sandbox instance{Config{}};
  return instance;
}

Program cpp(const std::string& source) {
  Program p;
  p.language = Language::cpp;
  p.source = source;
  return p;
}

Limits limits() {
  Limits l;
  l.cpu_time_s = 1;
  l.wall_time_s = 8;
  l.memory_mb = 256;
  return l;
}

TEST(SandboxCpp, CompilesAndRunsEachInput) {
  const auto results = sandbox().run_batch(
      cpp("#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n"),
      {"1 2", "40 2", "-5 5"}, limits());
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].stdout_data, "3\n") << to_json(results[0]).dump();
  EXPECT_EQ(results[1].stdout_data, "42\n");
  EXPECT_EQ(results[2].stdout_data, "0\n");
  for (const auto& r : results) EXPECT_EQ(r.verdict, Verdict::ok) << to_json(r).dump();
}

TEST(SandboxCpp, CompileErrorIsReportedWithDiagnostics) {
  const auto r = sandbox().run(cpp("int main() { return undefined_name; }\n"), "", limits());
  EXPECT_EQ(r.verdict, Verdict::runtime_error);
  EXPECT_TRUE(r.compile_error);
  EXPECT_NE(r.stderr_data.find("undefined_name"), std::string::npos) << r.stderr_data;
}

TEST(SandboxCpp, HostileBinaryIsContained) {
  // One program, several behaviours chosen by stdin, so the compile is paid once.
  const char* source = R"(
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <unistd.h>
#include <sys/socket.h>
int main() {
  char what[32] = {0};
  if (scanf("%31s", what) != 1) return 2;
  if (!strcmp(what, "segv")) { volatile int* p = nullptr; *p = 1; }
  if (!strcmp(what, "spin")) { for (volatile unsigned long i = 0;; ++i) {} }
  if (!strcmp(what, "eat")) { std::vector<char*> v; for (;;) { char* b = new char[1 << 24]; memset(b, 1, 1 << 24); v.push_back(b); } }
  if (!strcmp(what, "shell")) { execl("/bin/sh", "sh", "-c", "echo pwned", (char*)nullptr); perror("execl"); return 3; }
  if (!strcmp(what, "socket")) { if (socket(AF_INET, SOCK_STREAM, 0) < 0) { perror("socket"); return 4; } }
  if (!strcmp(what, "forkbomb")) { for (;;) fork(); }
  puts("ok");
}
)";
  // The CPU limit is generous so that "eat" reaches its memory limit first however slow the
  // machine's page faults; "spin" then runs under the tight limit on its own.
  Limits generous = limits();
  generous.cpu_time_s = 10;
  generous.wall_time_s = 20;
  const auto results = sandbox().run_batch(cpp(source), {"segv", "eat", "shell", "socket", "fine"}, generous);
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[0].verdict, Verdict::runtime_error) << to_json(results[0]).dump();
  EXPECT_EQ(results[0].signal, 11);
  EXPECT_EQ(results[1].verdict, Verdict::memory_limit) << to_json(results[1]).dump();
  const auto spin = sandbox().run(cpp(source), "spin", limits());
  EXPECT_EQ(spin.verdict, Verdict::time_limit) << to_json(spin).dump();
  EXPECT_EQ(results[2].exit_code, 3) << to_json(results[2]).dump();
  EXPECT_EQ(results[2].stdout_data.find("pwned"), std::string::npos);
  EXPECT_EQ(results[3].exit_code, 4);
  EXPECT_EQ(results[4].stdout_data, "ok\n");
}


// Program::files / fetch_files (POST /run_code's files): in the working directory before the run,
// read back after it without following links; each input of a batch starts from the same files.
TEST(SandboxWorkFiles, FilesGoInAndComeBackPerInput) {
  Program p;
  p.language = Language::python;
  p.source =
      "import os\nold = open('sub/count.txt').read()\nopen('sub/count.txt', 'w').write(old + input())\n"
      "os.symlink('/etc/hostname', 'link')\n";
  p.files = {{"sub/count.txt", "n="}};
  p.fetch_files = {"sub/count.txt", "link", "absent"};
  const auto results = sandbox().run_batch(p, {"1", "2"}, limits());
  ASSERT_EQ(results.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(results[i].verdict, Verdict::ok) << to_json(results[i]).dump();
    ASSERT_EQ(results[i].files.size(), 1u) << "only the regular file comes back";
    EXPECT_EQ(results[i].files[0].path, "sub/count.txt");
    EXPECT_EQ(results[i].files[0].content, "n=" + std::to_string(i + 1));
  }
}

TEST(SandboxWorkFiles, PathsOutsideTheWorkingDirectoryAreRefused) {
  EXPECT_EQ(work_path_problem("a/b.txt"), "");
  EXPECT_EQ(work_path_problem("./a//b.txt"), "");
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../../x", ".", "a/.."})
    EXPECT_NE(work_path_problem(bad), "") << bad;
  Program p;
  p.source = "pass\n";
  p.fetch_files = {"../../etc/passwd"};
  const auto r = sandbox().run(p, "", limits());
  EXPECT_EQ(r.verdict, Verdict::sandbox_error);
  EXPECT_NE(r.message.find("program.fetch_files"), std::string::npos) << r.message;
}

TEST(SandboxCpp, CompileStepIsReportedAndHasItsOwnCpuLimit) {
  const auto ok = sandbox().run(cpp("int main() { return 0; }\n"), "", limits());
  EXPECT_EQ(ok.verdict, Verdict::ok) << to_json(ok).dump();
  EXPECT_TRUE(ok.compile.ran);
  EXPECT_EQ(ok.compile.verdict, Verdict::ok);
  EXPECT_EQ(ok.compile.exit_code, 0);
  EXPECT_GT(ok.compile.wall_time_s, 0);
  auto tight = limits();
  tight.compile_cpu_time_s = 0.001;  // no g++ run is that fast
  const auto slow = sandbox().run(cpp("int main() { return 0; }\n"), "", tight);
  EXPECT_TRUE(slow.compile_error);
  EXPECT_EQ(slow.compile.verdict, Verdict::time_limit) << to_json(slow).dump();
}

}  // namespace
}  // namespace distil::sandbox
