// The supervisor side of one sandboxed process: clone into the namespaces, write the id maps,
// feed stdin and drain stdout/stderr concurrently with caps, answer the seccomp exec
// notification, enforce the wall-clock deadline, and turn the end into a RunResult.
#pragma once

#include <poll.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "sandbox/cgroup.h"
#include "sandbox/child.h"
#include "sandbox/sandbox.h"
#include "sandbox/unique_fd.h"

namespace distil::sandbox::detail {

struct SpawnOptions {
  bool namespaces = false;
  bool privileged_maps = false;  // supervisor may map arbitrary outside ids
  unsigned outside_root = 0;     // outside id of inside uid 0 (inside 1000 is +1)
  ChildPlan plan;                // fds are filled in by spawn_child
  int keep_fd = -1;              // passed to the child as fd 3 (fork-server socket)
  const RunCgroup* cgroup = nullptr;  // moved in before it is released to run
};

struct ChildProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd stdin_w, stdout_r, stderr_r, status_r;
  bool namespaces = false;
  std::chrono::steady_clock::time_point started;
};

// Throws std::runtime_error when the process cannot be created.
ChildProcess spawn_child(SpawnOptions& options);

// A sandbox process cloned ahead of its run: in fresh namespaces, its uid/gid maps written and
// already in a cgroup (where the supervisor must move it, on cgroup v2, the move waits for an
// RCU grace period), with only its own pipe ends open, waiting for its plan. The plan is
// copied into `arena`, a shared mapping at the same address in both processes.
struct ParkedChild {
  ChildProcess child;
  UniqueFd release;          // write end: one byte once the plan is in the arena
  int child_fds[4] = {-1, -1, -1, -1};  // stdin, stdout, stderr, status as numbered in the child
  void* arena = nullptr;
  std::size_t arena_size = 0;
  std::size_t arena_used = 0;    // the generic root plan the child may still be reading
  std::string generic_signature;  // of that plan; empty: the child builds its whole root itself
  std::unique_ptr<RunCgroup> cgroup;
  ParkedChild() = default;
  ParkedChild(const ParkedChild&) = delete;
  ParkedChild& operator=(const ParkedChild&) = delete;
  ~ParkedChild();  // kills and reaps a child that was never released, unmaps the arena
};

// Null with `error` set when the process cannot be created, mapped or moved.
// With `generic_root` (namespaces only), the child builds that part of its root meanwhile.
std::unique_ptr<ParkedChild> spawn_parked(bool namespaces, unsigned outside_root, bool privileged_maps,
                                          std::unique_ptr<RunCgroup> cgroup, const RootPlan* generic_root,
                                          std::string& error);

// Copies `plan` (fds are the parked child's own) into the arena and releases the child, which
// moves into `out`. False when the plan does not fit or the child is gone: the caller then
// spawns a fresh one.
bool release_parked(ParkedChild& parked, const ChildPlan& plan, ChildProcess& out);

// Reads at most `cap` bytes of a stream and discards the rest, remembering that it did.
struct CappedBuffer {
  std::string data;
  std::size_t cap = 0;
  bool truncated = false;
  bool open = true;
  void append(const char* p, std::size_t n);
};

// Concurrent stdin writer and stdout/stderr readers of one run.
class StdioPump {
 public:
  // `cap` bounds stdout; `stderr_cap` stderr (0: the same as `cap`).
  StdioPump(UniqueFd stdin_w, const std::string& stdin_data, UniqueFd stdout_r, UniqueFd stderr_r,
            std::size_t cap, std::size_t stderr_cap = 0);
  // Appends the pump's descriptors to `fds` (handle() is given the index where they start).
  void add_to(std::vector<pollfd>& fds);
  // Handles readiness of the entries added by add_to (same order, starting at `first`).
  void handle(const std::vector<pollfd>& fds, std::size_t first);
  bool outputs_open() const { return out_.open || err_.open; }
  bool stdout_over_cap() const { return out_.truncated; }
  void close_all();
  CappedBuffer& out() { return out_; }
  CappedBuffer& err() { return err_; }

 private:
  void read_into(UniqueFd& fd, CappedBuffer& buffer);
  UniqueFd stdin_w_, stdout_r_, stderr_r_;
  const std::string& stdin_data_;
  std::size_t stdin_written_ = 0;
  CappedBuffer out_, err_;
  std::size_t polled_ = 0;  // entries added by the last add_to
  int kinds_[3] = {};
};

// How a run ended, before it is turned into a verdict.
struct Termination {
  bool setup_failed = false;
  std::string setup_message;
  bool exited = false;
  int exit_code = -1;
  int signal = 0;
  bool killed_for_time = false;
  bool killed_for_output = false;
  bool killed_for_cpu = false;   // the CPU summed over the run's processes passed the limit
  double sampled_cpu_s = 0;      // the largest such sum seen while it ran (CpuMeter)
  bool memory_exceeded = false;  // cgroup OOM kill or equivalent
  bool exec_denied = false;      // the program tried to exec (denied by the notifier)
  // A system call the user filter denies, reported by its notification (the run was killed for
  // it): its number and AUDIT_ARCH_* value; -1 when none.
  int denied_syscall = -1;
  std::uint32_t denied_arch = 0;
  double cpu_time_s = 0;
  double wall_time_s = 0;
  std::size_t peak_memory_kb = 0;
  // The init stub reported the end of the run (with the resource use) and is still exiting:
  // the caller hands the child to a Reaper instead of waiting for the namespaces' teardown.
  bool unreaped = false;
};

// Watches a child's setup: failure records on the status pipe, and the seccomp user
// notification for exec (the first one is allowed, any later one denied).
class SetupMonitor {
 public:
  SetupMonitor(ChildProcess& child, const std::vector<std::string>* root_step_targets);
  void add_to(std::vector<pollfd>& fds);  // two entries
  void handle(const std::vector<pollfd>& fds, std::size_t first);
  bool exec_pending() const { return child_.status_r.valid(); }
  void read_status();
  void close_listener() { listener_.reset(); }
  bool failed = false;
  std::string message;
  bool exec_denied = false;
  int denied_syscall = -1;      // see Termination
  std::uint32_t denied_arch = 0;
  bool program_exited = false;  // reported by the init stub
  int program_status = 0;       // its wait status
  double program_cpu_s = 0;     // CPU of the stub and every process it reaped
  std::size_t program_maxrss_kb = 0;

 private:
  void answer_notification();
  ChildProcess& child_;
  const std::vector<std::string>* root_step_targets_;
  UniqueFd listener_;
  int execs_allowed_ = 0;
  std::string pending_;
};

// Waits until the child has exec'd (empty string) or failed (the reason).
std::string await_exec(ChildProcess& child, SetupMonitor& monitor, double timeout_s);

void kill_tree(const ChildProcess& child);

// Waits, off the caller's path, for sandboxes whose run is already judged (their init stub
// reported everything and is tearing the namespaces down), reaps them and only then gives
// their cgroups back to the pool. One thread, started on first use; the destructor waits for
// every adopted process.
class Reaper {
 public:
  Reaper() = default;
  ~Reaper();
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;
  void adopt(ChildProcess child, std::unique_ptr<RunCgroup> cgroup);
  // Returns once every process adopted so far is reaped and its cgroup given back.
  void drain();

 private:
  struct Entry {
    ChildProcess child;
    std::unique_ptr<RunCgroup> cgroup;
  };
  void loop();
  static void finish(Entry& entry);
  std::mutex mutex_;
  std::condition_variable drained_;
  std::vector<Entry> entries_;
  std::size_t finishing_ = 0;  // taken out of entries_, not finished yet
  UniqueFd wake_;  // eventfd
  bool stopping_ = false;
  std::thread thread_;
};

// The CPU time of every process of a run so far, read from /proc while it runs, so a run whose
// processes together pass the CPU limit is stopped then (RLIMIT_CPU bounds each process alone).
// The run's processes are those of its cgroup, or else those in the session of `root` (the
// sandbox's init, or the program itself without a PID namespace; user code cannot leave its
// session). A sample is what `root` has reaped since the meter was made (its cumulative child
// times in /proc/<root>/stat), plus its own time when `count_root_self`, plus the own times of
// every other process alive or not yet reaped. `root` is read first: a process's time can move
// only into its reaper's, so a process read before being reaped is never counted twice, and a
// sample never exceeds the true total (it can be short: a child reaped by a parent still alive
// counts only when the parent ends). The exact total comes from the init's report at the end.
class CpuMeter {
 public:
  CpuMeter(pid_t root, bool count_root_self, const RunCgroup* cgroup);
  double sample() const;  // seconds

 private:
  struct ProcStat {
    pid_t session = 0;
    long long own = 0, reaped = 0;  // clock ticks
  };
  static bool read_stat(pid_t pid, ProcStat& out);
  std::vector<pid_t> processes() const;
  pid_t root_;
  bool count_root_self_;
  const RunCgroup* cgroup_;
  long long baseline_ = 0;  // the root's reaped ticks when the meter was made
};

// When to sample a CpuMeter: from the moment the processes could together have used `cpu_limit_s`
// on this machine's CPUs (so short runs never pay), then every `interval()`.
class CpuSchedule {
 public:
  CpuSchedule(std::chrono::steady_clock::time_point started, double cpu_limit_s);
  std::chrono::steady_clock::time_point next() const { return next_; }
  bool due(std::chrono::steady_clock::time_point now) const { return now >= next_; }
  void advance(std::chrono::steady_clock::time_point now);

 private:
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point next_;
};

// Runs `child` to completion: stdin, capped output, exec notification, deadline, reaping; with
// `cpu_limit_s` > 0, stops the run once its processes together used more (CpuMeter over
// `cgroup`'s processes, or the child's session).
Termination supervise(ChildProcess& child, StdioPump& pump, double wall_limit_s,
                      const std::vector<std::string>* root_step_targets = nullptr, double cpu_limit_s = 0,
                      const RunCgroup* cgroup = nullptr);

// Verdict from a termination and the run's limits; fills the RunResult fields.
RunResult make_result(const Termination& t, StdioPump& pump, const Limits& limits);

// std::string pointers for execve.
class ArgvBuilder {
 public:
  explicit ArgvBuilder(std::vector<std::string> items);
  char* const* get() { return pointers_.data(); }

 private:
  std::vector<std::string> items_;
  std::vector<char*> pointers_;
};

}  // namespace distil::sandbox::detail
