#include "sandbox/seccomp_policy.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "sandbox/unique_fd.h"

namespace distil::sandbox::detail {
namespace {

// What CPython 3.11 and glibc programs need: file I/O inside the sandbox root, memory
// management, threads (clone without namespace flags, futex, robust lists, rseq), time,
// signals aimed at the sandbox's own processes (the PID namespace makes others invisible),
// polling and pipes. Nothing here reaches the network, other users, or kernel configuration.
constexpr const char* kUserAllowed[] = {
    // file descriptors and files (the root is read-only; /tmp is a size-capped tmpfs)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "lseek", "_llseek", "open", "openat", "openat2", "close", "close_range",
    "creat", "fstat", "stat", "lstat", "newfstatat", "fstatat64", "statx", "fstatfs", "statfs",
    "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents", "getdents64",
    "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename",
    "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "ftruncate",
    "truncate", "fsync", "fdatasync", "fcntl", "fcntl64", "dup", "dup2", "dup3", "pipe",
    "pipe2", "chmod", "fchmod", "fchmodat", "umask", "utimensat", "utime", "utimes",
    "flock", "fadvise64", "fallocate", "sendfile", "sendfile64", "copy_file_range", "splice",
    "tee", "memfd_create", "eventfd", "eventfd2", "poll", "ppoll", "select", "_newselect",
    "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait",
    "epoll_pwait2", "inotify_init1", "timerfd_create", "timerfd_settime", "timerfd_gettime",
    // memory
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    "membarrier",
    // threads, processes inside the sandbox, identity queries
    "fork", "vfork", "exit", "exit_group", "wait4", "waitid", "set_tid_address",
    "set_robust_list", "get_robust_list", "rseq", "futex", "futex_waitv", "arch_prctl",
    "getpid", "gettid", "getppid", "getpgrp", "getpgid", "getsid", "getuid", "geteuid",
    "getgid", "getegid", "getgroups", "getresuid", "getresgid", "sched_yield",
    "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "getcpu", "getpriority", "uname", "sysinfo", "getrlimit",
    "ugetrlimit", "getrusage", "times", "capget",
    // (prlimit64: below, only on the caller itself)
    // time
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "alarm", "setitimer", "getitimer", "timer_create", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timer_delete",
    // signals: kill reaches only processes of the sandbox's own PID namespace and uid
    "rt_sigprocmask", "rt_sigreturn", "sigreturn", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigsuspend", "sigaltstack", "pause", "kill", "tgkill", "tkill",
    "restart_syscall",
    // (rt_sigaction: below, SIGCHLD's disposition is fixed)
    // randomness
    "getrandom",
};

// Fail with EPERM: an ordinary error the program reports as a traceback, which is the useful
// feedback for a model that tried networking, multiprocessing managers or privilege changes.
constexpr const char* kUserEperm[] = {
    "socket", "socketpair", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setgroups", "setfsuid", "setfsgid", "setsid", "setpgid", "chown", "fchown",
    "lchown", "fchownat", "mknod", "mknodat", "shmget", "shmat", "shmctl", "semget", "semop",
    "msgget", "mq_open", "sched_setaffinity", "sched_setscheduler", "sched_setparam",
    "setpriority", "personality", "chroot", "sync", "syncfs", "ioprio_set", "mlock", "mlock2",
    "mlockall", "mbind", "set_mempolicy", "get_mempolicy", "migrate_pages", "move_pages",
    "inotify_init", "inotify_add_watch", "fanotify_init", "setrlimit", "sethostname",
    "setdomainname", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
};

// Explicitly killing (the default action kills too; these are listed for the documentation and
// so the supervisor policy can deny exactly them).
constexpr const char* kKernelAttackSurface[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount", "umount2",
    "pivot_root", "unshare", "setns", "bpf", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "create_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "perf_event_open", "userfaultfd",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "quotactl", "quotactl_fd",
    "iopl", "ioperm", "uselib", "vm86", "vm86old", "nfsservctl", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "pidfd_getfd",
    "process_madvise", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "landlock_create_ruleset", "kcmp", "seccomp", "syslog", "lsm_set_self_attr",
};

constexpr unsigned long long kNamespaceCloneFlags =
    CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
    CLONE_NEWCGROUP | CLONE_NEWTIME;

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

class Builder {
 public:
  explicit Builder(uint32_t default_action) : default_action_(default_action), ctx_(seccomp_init(default_action)) {
    if (!ctx_) throw std::runtime_error("seccomp_init failed");
    // A call from another architecture's ABI (x32 numbers with bit 30 set, the i386 int 0x80
    // entry) ends the whole process, as a denied call does. libseccomp's default here kills only
    // the calling thread: a second thread making such a call died alone and left the interpreter
    // waiting for it until the wall deadline.
    check(seccomp_attr_set(ctx_.get(), SCMP_FLTATR_ACT_BADARCH, kill_action()), "SCMP_FLTATR_ACT_BADARCH");
    // A binary tree over the system call numbers instead of a linear list: fewer instructions
    // per call, and a much cheaper load (the kernel runs the filter once per system call
    // number to build its allow cache).
    check(seccomp_attr_set(ctx_.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2), "SCMP_FLTATR_CTL_OPTIMIZE");
  }

  // Names unknown on this architecture (e.g. "open" on aarch64) are skipped, and so are rules
  // that repeat the default action (libseccomp refuses those).
  void rule(uint32_t action, const char* name) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR || action == default_action_) return;
    check(seccomp_rule_add(ctx_.get(), action, nr, 0), name);
  }
  void rule(uint32_t action, const char* name, scmp_arg_cmp cmp) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR || action == default_action_) return;
    check(seccomp_rule_add(ctx_.get(), action, nr, 1, cmp), name);
  }
  void rule(uint32_t action, const char* name, scmp_arg_cmp first, scmp_arg_cmp second) {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR || action == default_action_) return;
    check(seccomp_rule_add(ctx_.get(), action, nr, 2, first, second), name);
  }

  SeccompProgram export_program() {
    UniqueFd memfd(memfd_create("distil-seccomp", MFD_CLOEXEC));
    if (!memfd.valid()) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
    check(seccomp_export_bpf(ctx_.get(), memfd.get()), "seccomp_export_bpf");
    const off_t size = lseek(memfd.get(), 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0)
      throw std::runtime_error("seccomp_export_bpf produced a malformed program");
    SeccompProgram program;
    program.instructions.resize(static_cast<std::size_t>(size) / sizeof(sock_filter));
    if (pread(memfd.get(), program.instructions.data(), static_cast<std::size_t>(size), 0) != size)
      throw std::runtime_error("reading the exported seccomp program failed");
    return program;
  }

 private:
  static void check(int rc, const char* what) {
    if (rc < 0)
      throw std::runtime_error(std::string("seccomp rule for ") + what + ": " + std::strerror(-rc));
  }
  uint32_t default_action_;
  std::unique_ptr<void, CtxDeleter> ctx_;
};

void add_exec_rule(Builder& b, ExecRule exec_rule) {
  switch (exec_rule) {
    case ExecRule::allow:
      b.rule(SCMP_ACT_ALLOW, "execve");
      b.rule(SCMP_ACT_ALLOW, "execveat");
      break;
    case ExecRule::notify:
      b.rule(SCMP_ACT_NOTIFY, "execve");
      b.rule(SCMP_ACT_NOTIFY, "execveat");
      break;
    case ExecRule::deny:
      b.rule(SCMP_ACT_ERRNO(EPERM), "execve");
      b.rule(SCMP_ACT_ERRNO(EPERM), "execveat");
      break;
  }
}

// rt_sigaction with SIGCHLD's disposition fixed at SIG_DFL: SIG_IGN or SA_NOCLDWAIT would make
// the kernel reap the program's children at their exit without adding their CPU time to anyone's
// rusage, so the run's CPU total (which the PID namespace's init collects by reaping, see
// docs/sandbox.md) would miss them. Reading SIGCHLD's action (act == NULL) stays allowed; setting
// it fails with EPERM. The signal number is an int: the rules look at its low 32 bits only where
// the kernel does (17 | 1 << 32 is SIGCHLD to the kernel), and the other rules compare all 64
// bits, so a value with high bits set that is not SIGCHLD gets EINVAL.
void add_sigaction_rules(Builder& b) {
  const unsigned long long all = ~0ULL;
  b.rule(SCMP_ACT_ERRNO(EPERM), "rt_sigaction", SCMP_A0(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFULL, SIGCHLD),
         SCMP_A1(SCMP_CMP_NE, 0));
  b.rule(SCMP_ACT_ALLOW, "rt_sigaction", SCMP_A0(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFULL, SIGCHLD), SCMP_A1(SCMP_CMP_EQ, 0));
  static_assert(SIGCHLD == 17, "the blocks below cover 0..64 except 17");
  // 0..15, 16, 18..19, 20..23, 24..31, 32..63, 64: every signal number but SIGCHLD.
  const struct {
    unsigned long long mask, value;
  } blocks[] = {{all ^ 0xF, 0}, {all, 16}, {all ^ 0x1, 18}, {all ^ 0x3, 20}, {all ^ 0x7, 24}, {all ^ 0x1F, 32}, {all, 64}};
  for (const auto& block : blocks)
    b.rule(SCMP_ACT_ALLOW, "rt_sigaction", SCMP_A0(SCMP_CMP_MASKED_EQ, block.mask, block.value));
  b.rule(SCMP_ACT_ERRNO(EINVAL), "rt_sigaction", SCMP_A0(SCMP_CMP_GT, 64));
}

}  // namespace

bool seccomp_kill_process_available() {
  static const bool available = [] {
    // Linux 4.14 added both SECCOMP_RET_KILL_PROCESS and this query.
    std::uint32_t action = SECCOMP_RET_KILL_PROCESS;
    return syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
  }();
  return available;
}

uint32_t kill_action() { return seccomp_kill_process_available() ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_KILL; }

std::string denied_syscall_message(std::uint32_t arch, int nr) {
  // libseccomp's table: a static string, or null for a number it does not know.
  const char* name = seccomp_syscall_resolve_num_arch(arch, nr);
  if (!name) return "system call " + std::to_string(nr) + " is not allowed";
  return std::string("system call '") + name + "' (" + std::to_string(nr) + ") is not allowed";
}

bool is_exec_syscall(std::uint32_t arch, int nr) {
  return arch == seccomp_arch_native() && (nr == SYS_execve || nr == SYS_execveat);
}

SeccompProgram build_seccomp_program(SeccompPolicy policy, ExecRule exec_rule, DeniedAction denied) {
  if (policy == SeccompPolicy::user_program) {
    // Other architectures' ABIs are killed by the BADARCH attribute in any case: a notification
    // carries the number, but a number of another ABI names nothing the supervisor could report.
    const uint32_t kill = denied == DeniedAction::notify ? SCMP_ACT_NOTIFY : kill_action();
    Builder b(kill);
    for (const char* name : kUserAllowed) b.rule(SCMP_ACT_ALLOW, name);
    add_sigaction_rules(b);
    for (const char* name : kUserEperm) b.rule(SCMP_ACT_ERRNO(EPERM), name);
    for (const char* name : kKernelAttackSurface) b.rule(kill, name);
    // Resource limits of the caller only (pid 0, which is what getrlimit/setrlimit pass): the
    // program's uid is also the init stub's, which it could otherwise reconfigure (pid 1). The
    // kernel reads the pid as an int, so only an exact 64-bit 0 passes; its own pid given
    // explicitly is refused too.
    b.rule(SCMP_ACT_ALLOW, "prlimit64", SCMP_A0(SCMP_CMP_EQ, 0));
    b.rule(SCMP_ACT_ERRNO(EPERM), "prlimit64", SCMP_A0(SCMP_CMP_NE, 0));
    // Threads and fork, never new namespaces. clone3 passes its flags in memory a filter cannot
    // read, so it reports "not implemented" and glibc falls back to clone.
    b.rule(SCMP_ACT_ALLOW, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, kNamespaceCloneFlags, 0));
    b.rule(SCMP_ACT_ERRNO(ENOSYS), "clone3");
    // Terminal queries CPython makes at start (isatty, window size) and non-blocking toggles.
    for (unsigned long request : {TCGETS, TIOCGWINSZ, FIONBIO, FIOCLEX, FIONCLEX, FIONREAD})
      b.rule(SCMP_ACT_ALLOW, "ioctl", SCMP_A1(SCMP_CMP_EQ, request));
    b.rule(SCMP_ACT_ERRNO(ENOTTY), "ioctl", SCMP_A1(SCMP_CMP_EQ, TIOCGPGRP));
    // Thread names only; no_new_privs, dumpable and the rest stay as the sandbox set them.
    b.rule(SCMP_ACT_ALLOW, "prctl", SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
    b.rule(SCMP_ACT_ALLOW, "prctl", SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME));
    static_assert(PR_GET_NAME == PR_SET_NAME + 1);
    b.rule(SCMP_ACT_ERRNO(EPERM), "prctl", SCMP_A0(SCMP_CMP_LT, PR_SET_NAME));
    b.rule(SCMP_ACT_ERRNO(EPERM), "prctl", SCMP_A0(SCMP_CMP_GT, PR_GET_NAME));
    add_exec_rule(b, exec_rule);
    return b.export_program();
  }
  Builder b(SCMP_ACT_ALLOW);
  // The fork server (notify) stacks the user policy on its children, and of two filters' actions
  // the stricter wins: a kill here would turn the children's notification of, say, ptrace into
  // an anonymous SIGSYS. A notification ties, and then the newer filter's (the child's) wins.
  // For the server itself these calls then fail with ENOSYS once the supervisor closed its
  // listener (after the exec); the compiler (kill) has no listener.
  const uint32_t kill = denied == DeniedAction::notify ? SCMP_ACT_NOTIFY : kill_action();
  for (const char* name : kKernelAttackSurface) {
    const std::string n = name;
    // The fork server's children load the user policy on top of this one.
    if (n == "seccomp") continue;
    if (denied == DeniedAction::notify) {
      // The server takes each child's seccomp listener (pidfd_getfd, a descendant), and moves
      // itself into a cgroup namespace rooted at the batch's cgroup once it is there.
      if (n == "pidfd_getfd") continue;
      if (n == "unshare") {
        b.rule(kill, name, SCMP_A0(SCMP_CMP_NE, CLONE_NEWCGROUP));
        continue;
      }
    }
    b.rule(kill, name);
  }
  // EPERM, not a kill: the fork server's children stack the user policy on this one, and the
  // strictest action of the stack wins, so the user policy's EPERM for sockets must not become
  // a kill here.
  b.rule(SCMP_ACT_ERRNO(EPERM), "socket", SCMP_A0(SCMP_CMP_NE, AF_UNIX));
  add_exec_rule(b, exec_rule);
  return b.export_program();
}

}  // namespace distil::sandbox::detail
