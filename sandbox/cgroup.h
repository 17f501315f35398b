// cgroup limits for sandboxed runs: a memory ceiling for the whole process tree (RLIMIT_AS only
// bounds each process) and a pids ceiling, plus OOM-kill detection and peak memory. Uses a
// delegated cgroup v2 subtree when there is one (memory and pids enabled for our children),
// else a writable cgroup v1 memory hierarchy; otherwise the layer is reported off.
//
// Cgroups are pooled with their control files kept open: creating, removing and even opening
// cgroup files costs milliseconds on a busy host, reusing an open one microseconds.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "sandbox/unique_fd.h"

namespace distil::sandbox::detail {

// One pooled cgroup.
struct CgroupSlot {
  std::vector<std::string> dirs;         // one directory (v2: memory + pids; v1: memory)
  UniqueFd procs[1];                    // cgroup.procs
  UniqueFd memory_limit, memsw_limit, pids_max, oom_events, peak, kill;
  UniqueFd tasks;                       // v1 only: `tasks`, for a process to move itself
  std::size_t memory_bytes = 0;         // limits currently written
  int pids = 0;
};

class CgroupManager;

class RunCgroup {
 public:
  RunCgroup(CgroupManager* owner, CgroupSlot* slot, bool v2);
  ~RunCgroup();  // kills what is left and returns the slot to the pool once empty
  RunCgroup(const RunCgroup&) = delete;
  RunCgroup& operator=(const RunCgroup&) = delete;

  // Moves `pid` (not yet running user code) into the cgroup. Empty string or the error.
  std::string add(pid_t pid) const;
  // A descriptor a single-threaded process (a fresh clone, before it runs anything else) writes
  // "0" to, to move itself into the cgroup; -1 where there is none (cgroup v2) and add() must
  // be used. Why: writing a pid to cgroup.procs takes the global threadgroup lock for writing,
  // which waits for an RCU grace period (5-15 ms on these VMs, no CPU); a thread moving itself
  // through cgroup v1's `tasks` file needs no threadgroup stability and skips that lock
  // (0.03 ms). The permission check uses the opener's credentials, so the child may already be
  // in its own user namespace. Close-on-exec, and closed by the child right after the write: a
  // root-opened `tasks` descriptor could move any host process.
  int self_move_fd() const;
  // For a cgroup taken before its run (a parked process already in it): sets the run's limits
  // and starts its OOM count and peak from here. Empty string or the error.
  std::string begin_run(std::size_t memory_bytes, int pids_max);
  long oom_kills() const;       // since this run took the cgroup; -1 when unknown
  std::size_t peak_kb() const;  // 0 when unknown
  void kill_all() const;
  bool empty() const;
  // The processes in the cgroup now (as the caller's PID namespace numbers them).
  std::vector<pid_t> pids() const;

 private:
  long oom_kills_total() const;
  CgroupManager* owner_;
  CgroupSlot* slot_;
  bool v2_;
  long oom_baseline_ = 0;
};

class CgroupManager {
 public:
  // Null (with the reason in `why_not`) when no usable hierarchy is writable.
  static std::unique_ptr<CgroupManager> detect(std::string& why_not);
  ~CgroupManager();

  // A cgroup limited to `memory_bytes` (no swap) and `pids_max` processes.
  std::unique_ptr<RunCgroup> create(std::size_t memory_bytes, int pids_max, std::string& error);
  std::string description() const;

 private:
  friend class RunCgroup;
  CgroupManager() = default;
  CgroupSlot* make_slot(std::string& error);
  std::string set_limits(CgroupSlot& slot, std::size_t memory_bytes, int pids_max);
  void give_back(CgroupSlot* slot);
  bool v2_ = false;
  std::vector<std::string> bases_;  // our own directories, removed at destruction
  std::string v2_not_used_;         // why a cgroup2 mount there is was not used
  std::atomic<unsigned long> counter_{0};
  std::mutex mutex_;
  std::vector<std::unique_ptr<CgroupSlot>> all_;
  std::vector<CgroupSlot*> idle_;
};

}  // namespace distil::sandbox::detail
