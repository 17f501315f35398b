#include "sandbox/child.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sandbox/root_fs.h"

namespace distil::sandbox::detail {
namespace {

[[noreturn]] void report_and_exit(int status_fd, ChildStep step, int error, int detail) {
  const ChildFailure record{static_cast<std::int32_t>(step), error, detail};
  // Best effort: if the supervisor is gone there is nobody to tell.
  [[maybe_unused]] const ssize_t n = write(status_fd, &record, sizeof(record));
  _exit(127);
}

// Moves `fd` to `target`, keeping it open across exec.
bool move_fd(int fd, int target) {
  if (fd == target) return fcntl(fd, F_SETFD, 0) == 0;
  return dup2(fd, target) == target;
}

struct ProgramStart {
  const ChildPlan* plan;
  int status_fd;
  int exec_errno;  // written by the program process before it gives up (shared memory)
};

int exec_program(void* arg) {
  auto* start = static_cast<ProgramStart*>(arg);
  execve(start->plan->executable, start->plan->argv, start->plan->envp);
  start->exec_errno = errno ? errno : ENOEXEC;
  report_and_exit(start->status_fd, ChildStep::exec, start->exec_errno, -1);
}

// pid 1 of the sandbox: starts the program (vfork-style, so it costs no page-table copy), then
// reaps until the program ends, reports its wait status and exits, which makes the kernel kill
// everything else left in the namespace.
constexpr std::size_t kStubStackSize = 64 * 1024;

// The stub is a copy of the supervisor that never execs: its memory (and so what /proc/1/cmdline
// shows, which any process may read) still holds the supervisor's command line and environment.
// Blank both; the command line reads "init" (a last byte that is not NUL makes the kernel read the
// area as one string, as after setproctitle, so exactly "init\0" is shown, not the old length).
void hide_supervisor_strings(const ChildPlan& p) {
  if (p.env_end > p.env_start) std::memset(reinterpret_cast<void*>(p.env_start), 0, p.env_end - p.env_start);
  if (p.arg_end <= p.arg_start) return;
  char* args = reinterpret_cast<char*>(p.arg_start);
  const std::size_t size = p.arg_end - p.arg_start;
  std::memset(args, 0, size);
  static const char kTitle[] = "init";
  if (size > sizeof(kTitle)) {
    std::memcpy(args, kTitle, sizeof(kTitle));
    args[size - 1] = ' ';
  }
}

[[noreturn]] void run_init_stub(const ChildPlan& p, int status_fd, void* stack) {
  const std::size_t kStackSize = kStubStackSize;
  ProgramStart start{&p, status_fd, 0};
  const pid_t program = clone(exec_program, static_cast<char*>(stack) + kStackSize, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
  if (program < 0) report_and_exit(status_fd, ChildStep::init_stub, errno, -1);
  if (start.exec_errno != 0) _exit(127);  // the program process reported the failure
  // The stub never execs, so close-on-exec does nothing for it: close everything but the status
  // pipe, so the program's ends of the pipes are the only ones left (EOF means it closed them)
  // and nothing of the supervisor's stays reachable.
  const unsigned keep = static_cast<unsigned>(status_fd);
  if (keep > 0) syscall(SYS_close_range, 0U, keep - 1, 0U);
  syscall(SYS_close_range, keep + 1, ~0U, 0U);
  for (;;) {
    int status = 0;
    const pid_t pid = wait4(-1, &status, 0, nullptr);
    if (pid == program) {
      // The run is over. End whatever the program left behind (as init, kill(-1) reaches every
      // other process of the namespace) and reap it all, so the resource use below is that of
      // the whole tree and the supervisor can finish the run now instead of waiting for this
      // process's exit, which tears the namespaces down (mount tree, network) on its own time.
      kill(-1, SIGKILL);
      while (wait4(-1, nullptr, __WALL, nullptr) > 0 || errno == EINTR) {
      }
      rusage self{}, children{};
      getrusage(RUSAGE_SELF, &self);
      getrusage(RUSAGE_CHILDREN, &children);
      auto us = [](const timeval& tv) { return static_cast<std::int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec; };
      ChildFailure record{static_cast<std::int32_t>(ChildStep::program_exit), status, 0};
      record.cpu_us = us(self.ru_utime) + us(self.ru_stime) + us(children.ru_utime) + us(children.ru_stime);
      // Not the stub's own: it is a copy of the supervisor's address space.
      record.maxrss_kb = children.ru_maxrss;
      [[maybe_unused]] const ssize_t n = write(status_fd, &record, sizeof(record));
      _exit(0);
    }
    if (pid < 0 && errno != EINTR) _exit(0);
  }
}

// Every handler back to the default; 0, or the signal that could not be reset (errno set).
int reset_signal_handlers() {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    if (sigaction(sig, &sa, nullptr) != 0 && errno != EINVAL) return sig;
  }
  return 0;
}

// Blocks until the supervisor sends one byte on `fd`; false (errno set) when it cannot.
bool wait_for_release(int fd) {
  char byte = 0;
  ssize_t n;
  do n = read(fd, &byte, 1);
  while (n < 0 && errno == EINTR);
  if (n == 1) return true;
  if (n == 0) errno = EPIPE;
  return false;
}

}  // namespace

const char* child_step_name(ChildStep step) {
  switch (step) {
    case ChildStep::death_signal: return "set parent-death signal";
    case ChildStep::signals: return "reset signal handlers";
    case ChildStep::wait_for_ids: return "wait for uid/gid maps";
    case ChildStep::new_session: return "create session";
    case ChildStep::private_mounts: return "make mounts private";
    case ChildStep::root_tmpfs: return "mount root tmpfs";
    case ChildStep::root_step: return "build root";
    case ChildStep::pivot_root: return "pivot_root";
    case ChildStep::detach_old_root: return "detach old root";
    case ChildStep::readonly_root: return "remount root read-only";
    case ChildStep::hostname: return "set hostname";
    case ChildStep::stdio: return "connect stdin/stdout/stderr";
    case ChildStep::close_fds: return "close inherited descriptors";
    case ChildStep::chdir: return "enter work directory";
    case ChildStep::rlimits: return "set resource limits";
    case ChildStep::drop_groups: return "drop supplementary groups";
    case ChildStep::drop_gid: return "drop gid";
    case ChildStep::drop_uid: return "drop uid";
    case ChildStep::no_new_privs: return "set no_new_privs";
    case ChildStep::seccomp: return "load seccomp filter";
    case ChildStep::exec: return "exec";
    case ChildStep::listener_fd: return "seccomp listener";
    case ChildStep::program_exit: return "program exit";
    case ChildStep::init_stub: return "start the program under the init stub";
    case ChildStep::wait_for_cgroup: return "wait for the cgroup move";
    case ChildStep::join_cgroup: return "join the run's cgroup";
    case ChildStep::drop_capabilities: return "drop capabilities";
    case ChildStep::dumpable: return "mark not dumpable";
    case ChildStep::cgroup_namespace: return "enter a cgroup namespace";
  }
  return "unknown step";
}

int child_main(void* arg) {
  const ChildPlan& p = *static_cast<const ChildPlan*>(arg);
  int status = p.status_fd;  // renumbered below
  auto fail = [&status](ChildStep step, int detail = -1) { report_and_exit(status, step, errno, detail); };

  // Die with the supervisor: a crashed server must not leave sandboxes running.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(ChildStep::death_signal);
  // Into the run's cgroup before anything else (still one thread, a copy of the supervisor).
  if (p.cgroup_self_fd >= 0) {
    if (write(p.cgroup_self_fd, "0", 1) != 1) fail(ChildStep::join_cgroup);
    if (close(p.cgroup_self_fd) != 0) fail(ChildStep::join_cgroup);
  }
  // This process holds a copy of the supervisor's memory until it execs (the init stub: for the
  // whole run). Not dumpable means no core, and /proc/<pid>/{mem,maps,environ,exe...} and
  // ptrace-like access (process_vm_readv, get_robust_list, pidfd_getfd) are refused to anyone
  // without CAP_SYS_PTRACE, the program included, although it shares the stub's uid. The kernel
  // would mark it so at the uid change only when fs.suid_dumpable is 0: set it explicitly (again
  // after the uid change, which resets it to fs.suid_dumpable).
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail(ChildStep::dumpable);

  // Handlers are reset by exec, but ignored signals and the blocked mask are inherited. (A
  // prespawned process reset them while it waited.)
  if (!p.setup_started)
    if (const int sig = reset_signal_handlers(); sig != 0) fail(ChildStep::signals, sig);
  sigset_t all;
  sigemptyset(&all);
  if (sigprocmask(SIG_SETMASK, &all, nullptr) != 0) fail(ChildStep::signals);

  if (p.sync_fd >= 0 && !wait_for_release(p.sync_fd)) fail(ChildStep::wait_for_ids);
  // The creator's host uid is not mapped in the new user namespace, so files it created on the
  // new tmpfs would have no owner (EOVERFLOW). Become the namespace's root (an unprivileged
  // host id) for the setup; the capabilities are those the namespace grants.
  if (p.become_namespace_root && !p.setup_started) {
    if (syscall(SYS_setresgid, 0, 0, 0) != 0) fail(ChildStep::drop_gid);
    if (syscall(SYS_setresuid, 0, 0, 0) != 0) fail(ChildStep::drop_uid);
  }
  // Own session and process group: the wall-clock kill reaches every descendant.
  if (!p.setup_started && setsid() < 0) fail(ChildStep::new_session);

  if (p.root) {
    int step = 0, detail = -1;
    const int err = build_root(*p.root, &step, &detail);
    if (err != 0) {
      errno = err;
      fail(static_cast<ChildStep>(step), detail);
    }
  }
  if (p.hostname && sethostname(p.hostname, std::strlen(p.hostname)) != 0) fail(ChildStep::hostname);

  // This process holds a copy of every descriptor the supervisor had (other runs' pipes
  // included). Park the ones we keep high, put them at 0..3 (+ the status pipe), and really
  // close the rest: they must not reach the program, and RLIMIT_NOFILE counts from the lowest
  // free number, so the seccomp listener needs a low one to be free.
  constexpr int kParked = 512;
  const int in = fcntl(p.stdin_fd, F_DUPFD_CLOEXEC, kParked), out = fcntl(p.stdout_fd, F_DUPFD_CLOEXEC, kParked),
            err = fcntl(p.stderr_fd, F_DUPFD_CLOEXEC, kParked), st = fcntl(status, F_DUPFD_CLOEXEC, kParked);
  const int keep = p.keep_fd >= 0 ? fcntl(p.keep_fd, F_DUPFD_CLOEXEC, kParked) : -1;
  const bool second_release = p.second_release && p.sync_fd >= 0;
  const int parked_sync = second_release ? fcntl(p.sync_fd, F_DUPFD_CLOEXEC, kParked) : -1;
  if (in < 0 || out < 0 || err < 0 || st < 0 || (p.keep_fd >= 0 && keep < 0) || (second_release && parked_sync < 0))
    fail(ChildStep::stdio);
  if (!move_fd(in, 0) || !move_fd(out, 1) || !move_fd(err, 2)) report_and_exit(st, ChildStep::stdio, errno, -1);
  if (keep >= 0 && !move_fd(keep, 3)) report_and_exit(st, ChildStep::stdio, errno, -1);
  status = keep >= 0 ? 4 : 3;
  if (dup3(st, status, O_CLOEXEC) != status) report_and_exit(st, ChildStep::stdio, errno, -1);
  // Close-on-exec, and closed before the program starts.
  const int sync = second_release ? status + 1 : -1;
  if (second_release && dup3(parked_sync, sync, O_CLOEXEC) != sync) fail(ChildStep::stdio);
  const int last_kept = second_release ? sync : status;
  if (syscall(SYS_close_range, static_cast<unsigned>(last_kept) + 1, ~0U, 0U) != 0) fail(ChildStep::close_fds);
  // Mapped before RLIMIT_AS applies: this process is a copy of the supervisor, whose address
  // space (thread stacks, malloc arenas) may already exceed the program's limit.
  void* stub_stack = nullptr;
  if (p.init_stub) {
    stub_stack = mmap(nullptr, kStubStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stub_stack == MAP_FAILED) fail(ChildStep::init_stub);
  }
  // The status pipe stays open (close-on-exec) so a failure below can still be reported, and
  // its EOF tells the supervisor exec succeeded.

  if (p.work_dir && chdir(p.work_dir) != 0) fail(ChildStep::chdir);
  int failed_limit = -1;
  if (const int err = apply_rlimits(p.rlimits, &failed_limit); err != 0) {
    errno = err;
    fail(ChildStep::rlimits, failed_limit);
  }
  // Nothing of the program has run yet. Where the supervisor moves this process into the run's
  // cgroup (cgroup v2; on v1 it joined at its first step), it starts only after that move.
  if (second_release) {
    if (!wait_for_release(sync)) fail(ChildStep::wait_for_cgroup);
    if (close(sync) != 0) fail(ChildStep::wait_for_cgroup);
  }
  // A cgroup namespace rooted at the run's cgroup (so after the move, and while this process is
  // still the namespace's root): /proc/self/cgroup then reads "/" instead of the host's path
  // (the server's cgroup, the pool's directory, the run's number). Cloning with CLONE_NEWCGROUP
  // would root it at the supervisor's cgroup, before the move.
  if (p.cgroup_namespace && unshare(CLONE_NEWCGROUP) != 0) fail(ChildStep::cgroup_namespace);
  if (p.change_ids) {
    // Raw system calls: glibc's wrappers would try to broadcast the change to the threads the
    // supervisor had, which do not exist in this copy of it.
    if (p.drop_groups && syscall(SYS_setgroups, 0, nullptr) != 0) fail(ChildStep::drop_groups);
    if (syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) fail(ChildStep::drop_gid);
    if (syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) fail(ChildStep::drop_uid);
    // Changing credentials clears the parent-death signal; set it again.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(ChildStep::death_signal);
    // And resets dumpable to fs.suid_dumpable (see above).
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail(ChildStep::dumpable);
  }
  if (p.drop_capabilities) {
    // Still the namespace's root (unprivileged supervisor): keep the uid, lose the powers.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capset, &header, data) != 0) fail(ChildStep::drop_capabilities);
  }
  if (p.no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(ChildStep::no_new_privs);
  if (p.init_stub) {
    // Before the filter, which allows prctl for thread names only. The stub's name was the
    // supervisor thread's (a host program's name); the program gets its own at exec.
    hide_supervisor_strings(p);
    if (prctl(PR_SET_NAME, "init", 0, 0, 0) != 0) fail(ChildStep::init_stub);
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) {
      errno = EPERM;
      fail(ChildStep::dumpable);
    }
  }
  if (p.seccomp) {
    const unsigned flags = p.seccomp_listener ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0;
    const long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, p.seccomp);
    if (rc < 0) fail(ChildStep::seccomp);
    if (p.seccomp_listener) {
      // The supervisor copies the listener out with pidfd_getfd before answering our execve.
      const ChildFailure record{static_cast<std::int32_t>(ChildStep::listener_fd), static_cast<std::int32_t>(rc), 0};
      if (write(status, &record, sizeof(record)) != sizeof(record)) fail(ChildStep::seccomp);
    }
  }
  if (p.init_stub) run_init_stub(p, status, stub_stack);
  execve(p.executable, p.argv, p.envp);
  fail(ChildStep::exec);
  return 127;
}

int parked_main(void* arg) {
  const ParkedStart& start = *static_cast<const ParkedStart*>(arg);
  // Until child_main resets them, the supervisor's signal handlers are in place: nothing may run
  // them in this copy of the supervisor.
  sigset_t all;
  sigfillset(&all);
  if (sigprocmask(SIG_SETMASK, &all, nullptr) != 0) _exit(127);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(127);
  if (start.cgroup_self_fd >= 0 && write(start.cgroup_self_fd, "0", 1) != 1) _exit(127);  // closed below
  // A copy of the supervisor's memory waiting here: not dumpable (see child_main).
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) _exit(127);
  // Other runs' pipe ends copied from the supervisor would keep their streams open while this
  // process waits: keep only our own.
  int keep[5];
  for (int i = 0; i < 5; ++i) keep[i] = start.fds[i];
  for (int i = 1; i < 5; ++i)
    for (int j = i; j > 0 && keep[j - 1] > keep[j]; --j) {
      const int t = keep[j];
      keep[j] = keep[j - 1];
      keep[j - 1] = t;
    }
  unsigned from = 0;
  for (int i = 0; i < 5; ++i) {
    const unsigned fd = static_cast<unsigned>(keep[i]);
    if (fd > from && syscall(SYS_close_range, from, fd - 1, 0U) != 0) _exit(127);
    from = fd + 1;
  }
  if (syscall(SYS_close_range, from, ~0U, 0U) != 0) _exit(127);
  const int release = start.fds[4];
  int generic_error = 0, generic_step = 0, generic_detail = -1;
  if (start.generic_root) {
    // The id maps are written: set up what every run of this Sandbox has in common.
    if (!wait_for_release(release)) _exit(127);  // the supervisor gave up on us
    if (const int sig = reset_signal_handlers(); sig != 0) {
      generic_error = errno;
      generic_step = static_cast<int>(ChildStep::signals);
      generic_detail = sig;
    } else if (syscall(SYS_setresgid, 0, 0, 0) != 0 || syscall(SYS_setresuid, 0, 0, 0) != 0) {
      generic_error = errno;
      generic_step = static_cast<int>(ChildStep::drop_uid);
    } else if (setsid() < 0) {
      generic_error = errno;
      generic_step = static_cast<int>(ChildStep::new_session);
    } else {
      generic_error = build_root_generic(*start.generic_root, &generic_step, &generic_detail);
    }
  }
  if (!wait_for_release(release) || close(release) != 0) _exit(127);  // the supervisor gave up on us
  ChildPlan* plan = static_cast<const ArenaHeader*>(start.arena)->plan;
  if (!plan) _exit(127);
  // Reported now that the supervisor watches the status pipe: the run fails as a fresh
  // process failing the same step would.
  if (generic_error != 0) report_and_exit(plan->status_fd, static_cast<ChildStep>(generic_step), generic_error, generic_detail);
  return child_main(plan);
}

}  // namespace distil::sandbox::detail
