// Per-run cost of the sandbox next to its references, measured in one process, same program:
//   bare        posix_spawn of `python3 -S -c pass` (no isolation at all)
//   bwrap       bubblewrap with comparable isolation (all namespaces, read-only /usr, tmpfs /tmp)
//   one-shot    Sandbox::run (namespaces, read-only root, seccomp, rlimits, capped pipes)
//   fork server Sandbox::run_batch per input, (T(n) - T(2)) / (n - 2)
// Usage: sandbox_bench [runs=40] [python=/usr/bin/python3]. Prints medians and ratios.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "sandbox/sandbox.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double time_ms(const std::function<void()>& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

bool spawn_and_wait(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return false;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(5, std::atoi(argv[1])) : 40;
  const std::string python = argc > 2 ? argv[2] : "/usr/bin/python3";
  using namespace distil::sandbox;

  Config config;
  config.python_path = python;
  Sandbox sandbox(config);
  std::printf("isolation: %s\n", to_json(sandbox.isolation()).dump().c_str());
  Program pass;
  pass.source = "pass\n";
  Limits limits;

  const std::vector<std::string> bare = {python, "-S", "-c", "pass"};
  const std::vector<std::string> bwrap = {"/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--new-session",
                                          "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                                          "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                                          "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--chdir", "/tmp",
                                          python, "-S", "-c", "pass"};
  const bool have_bwrap = access("/usr/bin/bwrap", X_OK) == 0 && spawn_and_wait(bwrap);

  // Interleaved so that machine load affects every column alike.
  std::vector<double> t_bare, t_bwrap, t_oneshot;
  int failures = 0;
  for (int i = 0; i < runs; ++i) {
    t_bare.push_back(time_ms([&] { failures += !spawn_and_wait(bare); }));
    if (have_bwrap) t_bwrap.push_back(time_ms([&] { failures += !spawn_and_wait(bwrap); }));
    t_oneshot.push_back(time_ms([&] { failures += sandbox.run(pass, "", limits).verdict != Verdict::ok; }));
  }

  const int batch = 22;
  std::vector<double> t_server_per_test;
  bool used_server = false;
  for (int i = 0; i < std::max(3, runs / 8); ++i) {
    std::vector<RunResult> small, large;
    const double t_small = time_ms([&] { small = sandbox.run_batch(pass, std::vector<std::string>(2), limits); });
    const double t_large = time_ms([&] { large = sandbox.run_batch(pass, std::vector<std::string>(batch), limits); });
    for (const auto& r : small) failures += r.verdict != Verdict::ok;
    for (const auto& r : large) failures += r.verdict != Verdict::ok;
    used_server = used_server || (!large.empty() && large[0].fork_server);
    t_server_per_test.push_back((t_large - t_small) / (batch - 2));
  }

  const double bare_ms = median(t_bare);
  std::printf("\n%-34s %12s %10s\n", "runner (program: pass)", "median ms", "vs bare");
  std::printf("%-34s %12.2f %9.2fx\n", "bare python3 -S -c pass", bare_ms, 1.0);
  if (have_bwrap) std::printf("%-34s %12.2f %9.2fx\n", "bwrap (all namespaces, ro /usr)", median(t_bwrap), median(t_bwrap) / bare_ms);
  else std::printf("%-34s %12s\n", "bwrap", "unavailable");
  std::printf("%-34s %12.2f %9.2fx\n", "distil sandbox one-shot", median(t_oneshot), median(t_oneshot) / bare_ms);
  std::printf("%-34s %12.2f %9.2fx%s\n", "distil fork server, per test", median(t_server_per_test),
              median(t_server_per_test) / bare_ms, used_server ? "" : "  (fork server NOT used)");
  if (have_bwrap)
    std::printf("\none-shot vs bwrap: %.2fx\n", median(t_oneshot) / median(t_bwrap));
  std::printf("runs: %d interleaved; failures: %d\n", runs, failures);
  return failures == 0 ? 0 : 1;
}
