// Per-run cost of the sandbox next to its references, measured in one process, same program:
//   bare        posix_spawn of `python3 -S -c pass` (no isolation at all)
//   bwrap       bubblewrap with comparable isolation (all namespaces, read-only /usr, tmpfs /tmp)
//   one-shot    Sandbox::run (namespaces, read-only root, seccomp, rlimits, cgroup, capped pipes),
//               interleaved with the others and back to back; and, to show where time goes,
//               without a prespawned process, and without one and without cgroups
//   fork server Sandbox::run_batch per input, (T(102) - T(2)) / 100
//   command     `distil-env run --lang python --file pass.py`, the one-shot a user types (a whole
//               process: start-up, the sandbox's set-up, the run, the teardown)
// and the same three for a typical solution (imports, parses and sorts 1,000 integers).
// Usage: sandbox_bench [runs=40] [python=/usr/bin/python3] [distil-env=<build>/env_server/distil-env].
// Prints the CPU model, medians and ratios.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/cpu_info.h"
#include "sandbox/sandbox.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// CPU of this process and of its reaped children (the sandbox supervises in-process; the fork
// server's children are reaped by the server, which is reaped here).
double cpu_ms() {
  rusage self{}, children{};
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &children);
  auto ms = [](const timeval& tv) { return tv.tv_sec * 1e3 + tv.tv_usec / 1e3; };
  return ms(self.ru_utime) + ms(self.ru_stime) + ms(children.ru_utime) + ms(children.ru_stime);
}

struct Sample {
  std::vector<double> wall, cpu;
};

// Wall time of `f`; CPU time of `f` and of `after` (work `f` left running in the background,
// e.g. the sandbox's init tearing its namespaces down after run() returned).
double time_ms(const std::function<void()>& f, Sample* sample = nullptr, const std::function<void()>& after = {}) {
  const double c0 = cpu_ms();
  const auto t0 = Clock::now();
  f();
  const double wall = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (after) after();
  if (sample) {
    sample->wall.push_back(wall);
    sample->cpu.push_back(cpu_ms() - c0);
  }
  return wall;
}

// `stdin_path`: a file for the program's standard input (its output goes to /dev/null).
bool spawn_and_wait(const std::vector<std::string>& argv, const char* stdin_path = nullptr, bool quiet = false) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_path) posix_spawn_file_actions_addopen(&actions, 0, stdin_path, O_RDONLY, 0);
  if (stdin_path || quiet) posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// <build>/bench/sandbox/sandbox_bench -> <build>/env_server/distil-env
std::string default_distil_env() {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return {};
  std::string path(self, static_cast<std::size_t>(n));
  for (int i = 0; i < 3 && path.rfind('/') != std::string::npos; ++i) path.resize(path.rfind('/'));
  return path + "/env_server/distil-env";
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(5, std::atoi(argv[1])) : 40;
  const std::string python = argc > 2 ? argv[2] : "/usr/bin/python3";
  using namespace distil::sandbox;

  auto loadavg = [] {
    std::FILE* f = std::fopen("/proc/loadavg", "r");
    char buf[128] = "?";
    if (f) {
      if (!std::fgets(buf, sizeof(buf), f)) buf[0] = '\0';
      std::fclose(f);
    }
    std::string s(buf);
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  };
  std::printf("%s (%ld online)\n", distil::common::cpu_description().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("load average at start: %s\n", loadavg().c_str());
  Config config;
  config.python_path = python;
  Sandbox sandbox(config);
  std::printf("isolation: %s\n", to_json(sandbox.isolation()).dump().c_str());
  // Breakdown only: every run clones its own process (no prespawned one), and the same with
  // cgroups off.
  Config cloning = config;
  cloning.prespawned = 0;
  Sandbox sandbox_cloning(cloning);
  Config no_cgroup = cloning;
  no_cgroup.use_cgroups = false;
  Sandbox sandbox_no_cgroup(no_cgroup);
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
  const std::string distil_env = argc > 3 ? argv[3] : default_distil_env();
  char pass_path[] = "/tmp/distil-bench-pass-XXXXXX";
  const int pass_fd = mkstemp(pass_path);
  if (pass_fd < 0 || write(pass_fd, "pass\n", 5) != 5) return std::perror("writing pass.py"), 1;
  close(pass_fd);
  const std::vector<std::string> command = {distil_env, "run", "--lang", "python", "--file", pass_path,
                                            "--python", python};
  const bool have_command = access(distil_env.c_str(), X_OK) == 0 && spawn_and_wait(command, nullptr, true);

  // Interleaved so that machine load affects every column alike.
  Sample s_bare, s_bwrap, s_oneshot, s_bare2, s_cloning, s_no_cgroup, s_command;
  int failures = 0;
  for (int i = 0; i < runs; ++i) {
    time_ms([&] { failures += !spawn_and_wait(bare); }, &s_bare);
    if (have_bwrap) time_ms([&] { failures += !spawn_and_wait(bwrap); }, &s_bwrap);
    time_ms([&] { failures += sandbox.run(pass, "", limits).verdict != Verdict::ok; }, &s_oneshot,
            [&] { sandbox.settle(); });
    if (have_command) time_ms([&] { failures += !spawn_and_wait(command, nullptr, true); }, &s_command);
  }
  unlink(pass_path);
  // A separate loop: a cgroup v1 move right after another one (within an RCU grace period)
  // is cheap, so interleaving these with the prespawning sandbox would hide the cost.
  for (int i = 0; i < runs; ++i) {
    time_ms([&] { failures += !spawn_and_wait(bare); }, &s_bare2);
    time_ms([&] { failures += sandbox_cloning.run(pass, "", limits).verdict != Verdict::ok; }, &s_cloning,
            [&] { sandbox_cloning.settle(); });
    time_ms([&] { failures += !spawn_and_wait(bare); }, &s_bare2);
    time_ms([&] { failures += sandbox_no_cgroup.run(pass, "", limits).verdict != Verdict::ok; }, &s_no_cgroup,
            [&] { sandbox_no_cgroup.settle(); });
  }
  // One-shot runs back to back, as a caller looping over inputs makes them: the next prespawned
  // process is cloned while the current run executes. Wall per run; CPU of the whole loop,
  // background work included, per run.
  Sample s_back_to_back;
  for (int round = 0; round < std::max(3, runs / 8); ++round) {
    const int n = 8;
    Sample loop;
    for (int i = 0; i < n; ++i)
      time_ms([&] { failures += sandbox.run(pass, "", limits).verdict != Verdict::ok; }, &loop,
              i + 1 == n ? std::function<void()>([&] { sandbox.settle(); }) : std::function<void()>());
    double cpu = 0;
    for (double c : loop.cpu) cpu += c;
    for (double w : loop.wall) s_back_to_back.wall.push_back(w);
    s_back_to_back.cpu.push_back(cpu / n);
  }

  // Per test = (T(n) - T(2)) / (n - 2): the server's start (interpreter, imports, and a cgroup
  // move that can wait 5-15 ms for an RCU grace period) cancels out, and what is left of its
  // variance is spread over n - 2 tests.
  const int batch = 102;
  // One sample of the per-test cost of `program` on `input`; the results of the large batch.
  // `on`: the default sandbox (warm fork servers kept between batches: their children's CPU
  // reaches this process only when the server exits, so only wall time is known) or one with
  // a fork server per batch (reaped at the batch's end: CPU known).
  Config per_batch_config = config;
  per_batch_config.warm_fork_servers = 0;
  Sandbox sandbox_per_batch(per_batch_config);
  auto fork_server_sample = [&](const Program& program, const std::string& input, Sample& sample, Sandbox& on) {
    std::vector<RunResult> small, large;
    Sample a, b;
    time_ms([&] { small = on.run_batch(program, std::vector<std::string>(2, input), limits); }, &a);
    time_ms([&] { large = on.run_batch(program, std::vector<std::string>(batch, input), limits); }, &b);
    for (const auto& r : small) failures += r.verdict != Verdict::ok;
    for (const auto& r : large) failures += r.verdict != Verdict::ok;
    sample.wall.push_back((b.wall[0] - a.wall[0]) / (batch - 2));
    sample.cpu.push_back((b.cpu[0] - a.cpu[0]) / (batch - 2));
    return large;
  };
  Sample s_server, s_server_per_batch;
  bool used_server = false;
  for (int i = 0; i < std::max(5, runs / 4); ++i) {
    const auto large = fork_server_sample(pass, "", s_server, sandbox);
    used_server = used_server || (!large.empty() && large[0].fork_server);
    fork_server_sample(pass, "", s_server_per_batch, sandbox_per_batch);
  }

  // A typical solution (imports, parses 1,000 integers, sorts, counts): what the fork server
  // saves on real programs, whose imports it has loaded once per batch.
  Program typical;
  typical.source =
      "import sys, collections, heapq, bisect, math, itertools, functools, re\n"
      "data = list(map(int, sys.stdin.read().split()))\n"
      "counts = collections.Counter(data)\n"
      "print(sum(sorted(data)[:10]), len(counts), max(counts.values()))\n";
  std::string typical_input;
  for (int i = 0; i < 1000; ++i) typical_input += std::to_string((i * 7919) % 1009) + (i % 20 == 19 ? "\n" : " ");
  char input_path[] = "/tmp/distil-bench-input-XXXXXX";
  const int input_fd = mkstemp(input_path);
  if (input_fd < 0 || write(input_fd, typical_input.data(), typical_input.size()) != static_cast<ssize_t>(typical_input.size()))
    return std::perror("writing the typical program's input"), 1;
  close(input_fd);
  const std::vector<std::string> bare_typical = {python, "-S", "-c", typical.source};
  Sample t_bare, t_oneshot, t_server, t_server_per_batch;
  for (int i = 0; i < std::max(5, runs / 4); ++i) {
    time_ms([&] { failures += !spawn_and_wait(bare_typical, input_path); }, &t_bare);
    time_ms([&] { failures += sandbox.run(typical, typical_input, limits).verdict != Verdict::ok; }, &t_oneshot,
            [&] { sandbox.settle(); });
    for (const auto& r : fork_server_sample(typical, typical_input, t_server, sandbox))
      failures += r.verdict == Verdict::ok && !r.fork_server;  // a failed verdict is counted already
    fork_server_sample(typical, typical_input, t_server_per_batch, sandbox_per_batch);
  }
  unlink(input_path);

  double bare_wall = median(s_bare.wall), bare_cpu = median(s_bare.cpu);
  std::printf("\n%-34s %10s %8s %10s %8s\n", "runner (program: pass)", "wall ms", "ratio", "CPU ms", "ratio");
  auto row = [&](const char* name, const Sample& s, const char* note, bool cpu_known = true) {
    if (cpu_known)
      std::printf("%-34s %10.2f %7.2fx %10.2f %7.2fx%s\n", name, median(s.wall), median(s.wall) / bare_wall,
                  median(s.cpu), median(s.cpu) / bare_cpu, note);
    else
      std::printf("%-34s %10.2f %7.2fx %10s %8s%s\n", name, median(s.wall), median(s.wall) / bare_wall, "n/a", "",
                  note);
  };
  row("bare python3 -S -c pass", s_bare, "");
  // bwrap's sandboxed child dies with its PID namespace and is not reaped by bwrap, so its CPU
  // never reaches our RUSAGE_CHILDREN: only wall time compares.
  if (have_bwrap) row("bwrap (all namespaces, ro /usr)", s_bwrap, "", false);
  else std::printf("%-34s unavailable\n", "bwrap");
  row("distil sandbox one-shot", s_oneshot, "");
  row("distil one-shot, back to back", s_back_to_back, "");
  row("distil fork server (warm), per test", s_server, used_server ? "" : "  (fork server NOT used)", false);
  row("  one fork server per batch", s_server_per_batch, "");
  if (have_command) row("distil-env run (whole command)", s_command, "");
  else std::printf("%-34s unavailable (%s)\n", "distil-env run", distil_env.c_str());
  std::printf("typical solution (imports, 1,000 integers in; ratios to it run bare):\n");
  bare_wall = median(t_bare.wall);
  bare_cpu = median(t_bare.cpu);
  row("  bare python3 -S", t_bare, "");
  row("  distil sandbox one-shot", t_oneshot, "");
  row("  distil fork server (warm), per test", t_server, "", false);
  row("    one fork server per batch", t_server_per_batch, "");
  std::printf("breakdown (own loop, ratios to its own bare runs):\n");
  bare_wall = median(s_bare2.wall);
  bare_cpu = median(s_bare2.cpu);
  row("  bare python3 -S -c pass", s_bare2, "");
  row("  one-shot, no prespawned process", s_cloning, "");
  row("  same, cgroups off", s_no_cgroup, "");
  if (have_bwrap)
    std::printf("\none-shot vs bwrap (wall): %.2fx\n", median(s_oneshot.wall) / median(s_bwrap.wall));
  std::printf("medians; CPU = this process + reaped children (user + system)\n");
  std::printf("runs: %d interleaved; failures: %d\n", runs, failures);
  std::printf("load average at end: %s\n", loadavg().c_str());
  return failures == 0 ? 0 : 1;
}
