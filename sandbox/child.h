// What the sandboxed child does between clone and exec. Everything here runs in a process that
// shares (CLONE_VM) or copies the memory of a multithreaded supervisor, so it only makes raw
// system calls: no allocation, no locks, no C++ exceptions. Every call is checked; a failure is
// written to the status pipe as a ChildFailure record and the child exits 127.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "sandbox/rlimits.h"

namespace distil::sandbox::detail {

// One step of building the sandbox root, all paths absolute on the host before pivot_root.
struct RootStep {
  enum class Kind : std::uint8_t {
    bind_readonly,  // bind `source` at `target` (directory or file), then remount read-only
    bind_device,    // bind a device node file as is (e.g. /dev/null)
    bind_writable,  // bind a host directory writable (nosuid, nodev)
    symlink,        // create `target` pointing at `source`
    tmpfs,          // mount a tmpfs at `target` with options `data`
    proc,           // mount a fresh procfs at `target` (needs the new PID namespace), options `data`
    mask_proc,      // after a proc step that had to drop its options: bind `source` over `target`
    directory,      // mkdir `target`
    file,           // create `target` holding `data` (`size` bytes) with `mode`
  };
  Kind kind;
  const char* source = nullptr;
  const char* target = nullptr;
  const char* data = nullptr;
  std::size_t size = 0;
  unsigned long remount_flags = 0;  // bind_readonly: flags the source mount has locked
  bool optional = false;            // failure is tolerated (e.g. procfs refused)
  unsigned mode = 0444;             // file
};

struct RootPlan {
  const char* staging = nullptr;  // host directory the new root tmpfs is mounted on
  const char* root_options = nullptr;  // tmpfs options of the new root
  const RootStep* steps = nullptr;
  int step_count = 0;
  // Steps [0, generic_steps) (and the root tmpfs before them) are the same for every run of a
  // Sandbox: a prespawned process builds them while it waits for its run.
  int generic_steps = 0;
  bool generic_done = false;  // they are built already: start at generic_steps
};

// Steps a child can fail at, reported to the supervisor by number.
enum class ChildStep : std::int32_t {
  death_signal = 1, signals, wait_for_ids, new_session, private_mounts, root_tmpfs,
  root_step, pivot_root, detach_old_root, readonly_root, hostname, stdio, close_fds,
  chdir, rlimits, drop_groups, drop_gid, drop_uid, no_new_privs, seccomp, exec,
  listener_fd,   // not a failure: carries the seccomp listener descriptor number
  program_exit,  // not a failure: the init stub reports the program's wait status
  init_stub,     // starting the program under the init stub
  wait_for_cgroup,  // waiting for the supervisor to move the process into the run's cgroup
  join_cgroup,      // moving itself into the run's cgroup (RunCgroup::self_move_fd)
  drop_capabilities,  // capset to nothing (an unprivileged supervisor: no uid change possible)
  dumpable,         // PR_SET_DUMPABLE 0
  cgroup_namespace, // unshare(CLONE_NEWCGROUP)
};
const char* child_step_name(ChildStep step);

struct ChildFailure {
  std::int32_t step;
  std::int32_t error;  // errno, or for listener_fd the descriptor number, for program_exit the wait status
  std::int32_t detail; // index of the root step or rlimit entry that failed
  std::int32_t reserved = 0;
  // program_exit only: what a wait4 on the init stub would report, sent before the stub exits so
  // the supervisor need not wait for the namespaces' teardown. CPU of the stub and everything
  // it reaped (the program and any process left behind, all dead by then), microseconds.
  std::int64_t cpu_us = 0;
  std::int64_t maxrss_kb = 0;  // largest resident set among the reaped processes
};

struct ChildPlan {
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;
  int status_fd = -1;  // write end, close-on-exec: EOF tells the supervisor exec happened
  int sync_fd = -1;    // read end: one byte once the uid/gid maps are written (-1: no wait)
  // Wait for a second byte on sync_fd before starting the program: the supervisor moves the
  // process into its cgroup (slow on cgroup v1) while the child builds its root.
  bool second_release = false;
  // A cgroup v1 `tasks` descriptor (RunCgroup::self_move_fd): the child's first act is to write
  // "0" to it, moving itself into the run's cgroup, then it closes it (-1: none).
  int cgroup_self_fd = -1;
  int keep_fd = -1;    // one extra descriptor passed through exec as fd 3 (fork server socket)
  const RootPlan* root = nullptr;  // null: no new root (degraded mode)
  const char* hostname = nullptr;
  const char* work_dir = nullptr;
  RlimitPlan rlimits;
  bool become_namespace_root = false;  // setresuid(0) inside the new user namespace first
  bool setup_started = false;  // a prespawned process did that and setsid already
  bool change_ids = false;
  bool drop_groups = true;         // false when the user namespace had setgroups denied
  bool drop_capabilities = false;  // clear all capability sets (no uid change possible)
  uid_t uid = 0;
  gid_t gid = 0;
  bool no_new_privs = true;
  const sock_fprog* seccomp = nullptr;
  bool seccomp_listener = false;
  // In a PID namespace, stay as a minimal init (pid 1) and run the program as pid 2: signals a
  // program sends itself then behave as on any host (init ignores default-action signals from
  // inside its namespace), and the stub reports the program's wait status.
  bool init_stub = false;
  // unshare(CLONE_NEWCGROUP) once the process is in the run's cgroup (with the namespaces): the
  // program then sees its cgroup as "/" instead of the host's path to it.
  bool cgroup_namespace = false;
  // Where the supervisor's own argument and environment strings lie (the same addresses in this
  // copy of it). The init stub blanks them: /proc/1/cmdline is readable by every process of the
  // namespace, and the program must not learn the server's command line (host paths) there.
  std::uintptr_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  const char* executable = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
};

// Entry point for clone(); never returns on success (exec), exits 127 on failure.
int child_main(void* plan);

// A child cloned ahead of its run (see ParkedChild in supervisor.h): keeps only its own pipe
// ends, waits for one byte on `release_fd`, then runs child_main on the plan whose address the
// supervisor stored at the start of `arena` (a shared mapping, same address in both).
struct ParkedStart {
  void* arena = nullptr;
  int fds[5] = {-1, -1, -1, -1, -1};  // stdin, stdout, stderr, status, release (read end)
  // When set: a first byte on the release pipe says the id maps are written; the process then
  // becomes the namespace's root, starts its session and builds the generic part of this root
  // (the plan in the arena will say generic_done), then waits for the second byte.
  const RootPlan* generic_root = nullptr;
  int cgroup_self_fd = -1;  // as ChildPlan::cgroup_self_fd, done before anything else
};

// Arena header, at its start: the plan, once released.
struct ArenaHeader {
  ChildPlan* plan;
  std::int32_t generic_error;  // errno of a failed generic root build (the plan cannot use it)
};
int parked_main(void* start);

}  // namespace distil::sandbox::detail
