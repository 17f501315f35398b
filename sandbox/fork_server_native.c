/* The fork server's loop, in C, loaded into the sandboxed interpreter (fork_server_boot.h) with
 * ctypes.PyDLL and called once: it serves requests until the supervisor hangs up, and returns 1
 * in each forked child, sandboxed and holding the run's pipes, which then runs the program.
 *
 * Why C: after a fork every page of the interpreter is shared copy-on-write with the child, so
 * each page the server's own loop touches while a child lives is copied (a fault, ~2 us on a VM),
 * and so is each page the child touches before the program starts. A loop written in Python
 * touched ~130 pages per test in the server and ~200 in the child (Python's after-fork hooks,
 * socket.recv_fds, ctypes, setrlimit wrappers) before the program ran; this one touches a few
 * pages of stack. Its only inputs are the supervisor's requests on the control socket (a tag
 * byte and three descriptors), each child's seccomp listener number on that child's socket, and
 * the notifications of the child's filter (a system call number and architecture), nothing else.
 *
 * Built as a small shared object with no dependency but libc (it is loaded into whatever
 * interpreter the sandbox is configured with), embedded into distil_sandbox, and written into
 * every user program's read-only /box as native.so: the fork server loads it, and every user
 * program (one-shot and the fork server alike) has it preloaded (LD_PRELOAD, see the constructor
 * below). Every system call's result is checked. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h> /* fchmodat */
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* The ABI the user filter lets through (it kills every other one before any notification). */
#if defined(__x86_64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_AARCH64
#else
#error "the fork server's native loop knows no AUDIT_ARCH for this architecture"
#endif

/* The sandbox's uid/gid for the program inside the user namespace (namespaces.cc maps it). */
enum { kProgramId = 1000 };

/* Reply per request, as fork_server.cc reads it. */
struct reply {
  int32_t status; /* wait status */
  int32_t flags;  /* kTimedOut | kSetupFailed | kSyscallDenied | kExecDenied | kBatchEnded */
  double user_s;
  double system_s;
  int64_t max_rss_kb;
  int32_t denied_nr;    /* kSyscallDenied: the call's number */
  uint32_t denied_arch; /* and its AUDIT_ARCH_* */
} __attribute__((packed));
enum { kTimedOut = 1, kSetupFailed = 2, kSyscallDenied = 4, kExecDenied = 8, kBatchEnded = 16 };

/* Preloaded into every user program (LD_PRELOAD, one-shot and fork server alike; here it runs in
 * the server at its start, and its children inherit the result). glibc has sized the default
 * stack of every thread from RLIMIT_STACK's soft limit before any constructor runs (2 MiB, so
 * many threads fit under RLIMIT_AS); the main thread may now grow its stack to the hard limit
 * (deep recursion). The kernel left at least 128 MiB below the stack at exec, more than the hard
 * limit. A failure is reported on stderr: the program still runs, with a shallower stack. */
__attribute__((constructor)) static void distil_raise_main_stack(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_STACK, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  r.rlim_cur = r.rlim_max;
  if (setrlimit(RLIMIT_STACK, &r) != 0) {
    static const char text[] = "distil sandbox: raising RLIMIT_STACK to its hard limit failed\n";
    ssize_t n = write(2, text, sizeof text - 1);
    (void)n;
  }
}
/* A warm server's 'B' request: the limits of the batch that follows (fork_server.cc sends it). */
struct batch_limits {
  double wall_s;
  int64_t cpu_s, fsize_bytes, nofile, nproc;
} __attribute__((packed));

struct limits {
  int is_init;
  double wall_s;
  long long cpu_s, fsize_bytes, nofile, nproc;
  const struct sock_filter* filter;
  unsigned short filter_len;
};

struct child {
  pid_t pid;
  int ctl;    /* our end of the socket the child waits on for its descriptors, then its listener */
  int report; /* read end: the child's setup failure text, EOF when it is running the program */
};

static void write_all(int fd, const char* text, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, text, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text += n;
    size -= (size_t)n;
  }
}

/* In the child before the program: tells the server which step failed, then exits. */
_Noreturn static void child_fail(int report, const char* step) {
  char text[256];
  int n = snprintf(text, sizeof text, "%s: %s", step, strerror(errno));
  if (n > 0) write_all(report, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
  _exit(127);
}

static int set_limit(int resource, long long soft, long long hard) {
  struct rlimit r = {(rlim_t)soft, (rlim_t)hard};
  return setrlimit(resource, &r);
}

/* Room for the ancillary data of one message: three descriptors. */
union fd_control {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * 3)];
};

/* A one-byte message (`iov`) with `control` as its (zeroed) ancillary buffer. */
static void init_message(struct msghdr* msg, struct iovec* iov, union fd_control* control) {
  memset(control, 0, sizeof *control);
  memset(msg, 0, sizeof *msg);
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
  msg->msg_control = control->buf;
  msg->msg_controllen = sizeof control->buf;
}

/* Receives one message: up to `size` bytes of data (the tag byte first; a longer message is
 * cut) and up to `max_fds` descriptors. Returns the byte count (0 at EOF) or -1; descriptors
 * beyond what fits were closed by the kernel (MSG_CTRUNC). */
static ssize_t receive_into(int socket, char* data, size_t size, int* fds, int max_fds, int* nfds) {
  union fd_control control;
  struct iovec iov = {data, size};
  struct msghdr msg;
  init_message(&msg, &iov, &control);
  ssize_t n;
  do n = recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  *nfds = 0;
  if (n < 0) return -1;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < count; ++i) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (*nfds < max_fds) fds[(*nfds)++] = fd;
      else close(fd);
    }
  }
  return n;
}

static ssize_t receive(int socket, char* tag, int* fds, int max_fds, int* nfds) {
  return receive_into(socket, tag, 1, fds, max_fds, nfds);
}

static int send_fds(int socket, const int fds[3]) {
  union fd_control control;
  char tag = 'R';
  struct iovec iov = {&tag, 1};
  struct msghdr msg;
  init_message(&msg, &iov, &control);
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * 3);
  memcpy(CMSG_DATA(c), fds, sizeof(int) * 3);
  ssize_t n;
  do n = sendmsg(socket, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == 1 ? 0 : -1;
}

static int close_from(unsigned first, unsigned last) {
  if (first > last) return 0;
  return (int)syscall(SYS_close_range, first, last, 0);
}

/* Closes every descriptor from 3 up except `a` and `b`. */
static int close_all_but(int a, int b) {
  unsigned lo = (unsigned)(a < b ? a : b), hi = (unsigned)(a < b ? b : a);
  if (close_from(3, lo - 1) != 0 || close_from(lo + 1, hi - 1) != 0 || close_from(hi + 1, ~0U) != 0) return -1;
  return 0;
}

/* The child, right after the fork. Everything that does not depend on the input is done before
 * it arrives (the server forks ahead, while the supervisor handles the previous result); no user
 * code runs until the descriptors are connected and the seccomp filter is loaded. Returns only
 * on success. */
static void child_become_sandboxed(int ctl, int report, const struct limits* lim) {
  /* As init, the server's session and process group are the namespace's (1), which is where a
   * one-shot program runs too; the server kills leftovers with kill(-1). Only a server that is
   * not init (no PID namespace) needs a group to kill. */
  if (!lim->is_init && setsid() < 0) child_fail(report, "setsid");
  if (chdir("/tmp") != 0) child_fail(report, "chdir /tmp");
  /* As the one-shot path: SIGXCPU at the limit, SIGKILL a second later. */
  if (set_limit(RLIMIT_CPU, lim->cpu_s, lim->cpu_s + 1) != 0) child_fail(report, "setrlimit(RLIMIT_CPU)");
  if (set_limit(RLIMIT_FSIZE, lim->fsize_bytes, lim->fsize_bytes) != 0) child_fail(report, "setrlimit(RLIMIT_FSIZE)");
  if (set_limit(RLIMIT_NPROC, lim->nproc, lim->nproc) != 0) child_fail(report, "setrlimit(RLIMIT_NPROC)");
  if (set_limit(RLIMIT_CORE, 0, 0) != 0) child_fail(report, "setrlimit(RLIMIT_CORE)");
  /* Raw system calls: they change this process's ids only (the interpreter runs no threads). */
  if (syscall(SYS_setgroups, 0, NULL) != 0) child_fail(report, "setgroups");
  if (syscall(SYS_setresgid, kProgramId, kProgramId, kProgramId) != 0) child_fail(report, "setresgid");
  if (syscall(SYS_setresuid, kProgramId, kProgramId, kProgramId) != 0) child_fail(report, "setresuid");
  /* The uid change cleared the parent-death signal. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) child_fail(report, "prctl(PR_SET_PDEATHSIG)");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(report, "prctl(PR_SET_NO_NEW_PRIVS)");

  char tag = 0;
  int fds[3];
  int nfds = 0;
  ssize_t n = receive(ctl, &tag, fds, 3, &nfds);
  if (n <= 0 || tag != 'R' || nfds != 3) _exit(0); /* retired unused (the server is ending) */
  for (int i = 0; i < 3; ++i)
    if (fds[i] < 3) {
      errno = EBADF;
      child_fail(report, "received descriptor below 3");
    }
  for (int i = 0; i < 3; ++i)
    if (dup2(fds[i], i) < 0) child_fail(report, "dup2");
  /* Everything else goes: the received copies, the server's descriptors (the socket to the
   * server stays until the listener is handed over). */
  if (close_all_but(report, ctl) != 0) child_fail(report, "close_range");
  if (set_limit(RLIMIT_NOFILE, lim->nofile, lim->nofile) != 0) child_fail(report, "setrlimit(RLIMIT_NOFILE)");
  /* The user filter with a listener, as one-shot runs have it (the supervisor holds theirs): the
   * server answers this child's exec attempts (EPERM, remembered for the feedback) and is told
   * of any denied call, which it names in its reply and kills the run for. */
  struct sock_fprog program = {lim->filter_len, (struct sock_filter*)lim->filter};
  int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program);
  if (listener < 0) child_fail(report, "seccomp");
  /* From here on only calls the filter allows (write, read, close): the server copies the
   * listener (pidfd_getfd) once it knows the number, and says so; only then may this process drop
   * its own copy, which the program must not hold. */
  int32_t number = listener;
  if (write(ctl, &number, sizeof number) != (ssize_t)sizeof number) child_fail(report, "sending the listener number");
  char ack = 0;
  ssize_t got;
  do got = read(ctl, &ack, 1);
  while (got < 0 && errno == EINTR);
  if (got != 1) {
    if (got == 0) errno = EPIPE;
    child_fail(report, "handing over the seccomp listener");
  }
  if (close(listener) != 0 || close(ctl) != 0) child_fail(report, "close");
  /* EOF on the report pipe tells the server the setup succeeded. */
  if (close(report) != 0) child_fail(report, "close");
}

/* Forks the next child ahead of its input. Returns 1 in the child (sandboxed, holding the
 * run's pipes), 0 in the server, -1 on failure. */
static int fork_child(int control, const struct limits* lim, struct child* out) {
  int pair[2], pipefd[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return -1;
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    close(pair[0]);
    close(pair[1]);
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    int saved = errno;
    close(pair[0]);
    close(pair[1]);
    close(pipefd[0]);
    close(pipefd[1]);
    errno = saved;
    return -1;
  }
  if (pid == 0) {
    close(pair[0]);
    close(pipefd[0]);
    close(control);
    child_become_sandboxed(pair[1], pipefd[1], lim);
    return 1;
  }
  close(pair[1]);
  close(pipefd[1]);
  out->pid = pid;
  out->ctl = pair[0];
  out->report = pipefd[0];
  return 0;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void terminate(pid_t pid, int is_init) {
  kill(pid, SIGKILL);
  if (!is_init) killpg(pid, SIGKILL);
}

/* As the PID namespace's init, kill(-1) reaches every process but this one; what the child
 * forked is then reaped here, so no test leaves anything behind for the next. */
static void kill_leftovers(pid_t pid, int is_init) {
  if (!is_init) {
    killpg(pid, SIGKILL);
    return;
  }
  kill(-1, SIGKILL);
  for (;;) {
    if (waitpid(-1, NULL, __WALL) >= 0) continue;
    if (errno == EINTR) continue;
    break; /* ECHILD: nothing left */
  }
}

/* Removes everything inside the directory open as `dir` (consumed). Children run one at a time
 * and every process of a finished one is dead before this, so emptying /tmp gives the next child
 * the same clean directory. (A private mount namespace per child would too, but its teardown
 * costs an RCU grace period per test.) One descriptor per level of nesting. */
static int empty_directory(int dir, int depth) {
  if (depth > 256) {
    close(dir);
    errno = ELOOP;
    return -1;
  }
  DIR* d = fdopendir(dir);
  if (!d) {
    int saved = errno;
    close(dir);
    errno = saved;
    return -1;
  }
  int rc = 0;
  for (int removed = 1; removed && rc == 0;) { /* again until a pass removes nothing */
    removed = 0;
    rewinddir(d);
    struct dirent* e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      /* Anything but a directory goes with one unlink (EISDIR says it is one: no stat, whose
       * symbol would tie this object to a newer glibc than the interpreter may have). */
      if (e->d_type != DT_DIR) {
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
          removed = 1;
          errno = 0;
          continue;
        }
        if (errno != EISDIR) { rc = -1; break; }
      }
      /* A directory: the program may have locked its mode; empty it, then remove it. */
      if (fchmodat(dirfd(d), e->d_name, 0700, 0) != 0) { rc = -1; break; }
      int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0 || empty_directory(sub, depth + 1) != 0) { rc = -1; break; }
      if (unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR) != 0) { rc = -1; break; }
      removed = 1;
      errno = 0;
    }
    if (rc == 0 && errno != 0) rc = -1; /* readdir failed */
  }
  int saved = errno;
  closedir(d);
  errno = saved;
  return rc;
}

static int wipe(const char* path) {
  int dir = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return -1;
  return empty_directory(dir, 0);
}

/* /tmp and /dev/shm (POSIX shared memory and semaphores): both writable, both emptied. */
static int wipe_tmp(void) { return wipe("/tmp") == 0 && wipe("/dev/shm") == 0 ? 0 : -1; }

static int send_reply(int control, const struct reply* r, const char* text, size_t size) {
  char buf[sizeof *r + 4096];
  if (size > 4096) size = 4096;
  memcpy(buf, r, sizeof *r);
  memcpy(buf + sizeof *r, text, size);
  ssize_t n;
  do n = send(control, buf, sizeof *r + size, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n < 0 ? -1 : 0;
}

static double seconds(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6; }

/* Runs one request in `c` (already forked and waiting): hands it the descriptors, waits for it
 * within the wall deadline (or a kill request), reaps it and everything it left, replies.
 *
 * The CPU time replied is what this server's RUSAGE_CHILDREN grew by during the request: the
 * child's own, that of every descendant it reaped, and that of every process it left behind
 * (orphans reparented to this server, which is the namespace's init, and whatever
 * kill_leftovers ends), so workers the program never waits for count as they do in a one-shot
 * run. Nothing can be reaped without reaching this sum: the user filter keeps SIGCHLD's
 * disposition at SIG_DFL (SIG_IGN would let the kernel discard a child's CPU at its exit).
 * Only one child runs at a time and nothing else of the previous one is left, so the growth is
 * this run's. */
/* A notification from the child's filter: its exec attempts are refused (EPERM, as one-shot);
 * any other call is one the filter denies, and the run ends here. Returns 1 when the child must
 * be killed for it, 0 otherwise. */
static int answer_notification(int listener, int* flags, struct reply* r) {
  struct seccomp_notif request;
  memset(&request, 0, sizeof request);
  if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &request) != 0) return 0; /* the caller died, or EINTR */
  if (request.data.arch == AUDIT_ARCH_NATIVE && (request.data.nr == SYS_execve || request.data.nr == SYS_execveat)) {
    struct seccomp_notif_resp response;
    memset(&response, 0, sizeof response);
    response.id = request.id;
    response.error = -EPERM;
    *flags |= kExecDenied;
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response); /* ENOENT: the caller died; fine */
    return 0;
  }
  /* Blocked in the call until it dies: it never runs. */
  if (!(*flags & kSyscallDenied)) {
    *flags |= kSyscallDenied;
    r->denied_nr = request.data.nr;
    r->denied_arch = request.data.arch;
  }
  return 1;
}

static int run_one(int control, const struct limits* lim, struct child* c, const int fds[3]) {
  struct rusage before;
  if (getrusage(RUSAGE_CHILDREN, &before) != 0) return -1;
  if (send_fds(c->ctl, fds) != 0) {
    /* the child is gone: its wait status says so */
  }
  for (int i = 0; i < 3; ++i) close(fds[i]);
  int pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
  if (pidfd < 0) return -1;
  const double deadline = now_s() + lim->wall_s;
  int flags = 0;
  struct reply r;
  memset(&r, 0, sizeof r);
  int listener = -1;
  const char* own_error = NULL; /* a failure of this side of the setup */
  int own_errno = 0;
  for (;;) {
    double remaining = deadline - now_s();
    if (remaining <= 0) {
      flags |= kTimedOut;
      terminate(c->pid, lim->is_init);
      break;
    }
    struct pollfd p[4] = {{pidfd, POLLIN, 0}, {control, POLLIN, 0}, {c->ctl, POLLIN, 0}, {listener, POLLIN, 0}};
    int ms = (int)(remaining * 1000.0) + 1;
    int n = poll(p, 4, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      close(pidfd);
      if (listener >= 0) close(listener);
      if (c->ctl >= 0) close(c->ctl);
      return -1;
    }
    /* First: a denied call made just before the child's end is still this run's verdict. */
    if (p[3].revents & POLLIN) {
      if (answer_notification(listener, &flags, &r)) {
        terminate(c->pid, lim->is_init);
        break;
      }
    } else if (p[3].revents & (POLLHUP | POLLERR)) {
      close(listener); /* every process of the run is gone */
      listener = -1;
    }
    if (p[2].revents) { /* the child's listener number, or its end (setup failed) */
      int32_t number = -1;
      ssize_t got;
      do got = recv(c->ctl, &number, sizeof number, 0);
      while (got < 0 && errno == EINTR);
      if (got == (ssize_t)sizeof number) {
        listener = (int)syscall(SYS_pidfd_getfd, pidfd, number, 0);
        if (listener < 0) {
          own_error = "copying the child's seccomp listener";
          own_errno = errno;
          terminate(c->pid, lim->is_init);
          close(c->ctl);
          c->ctl = -1;
          break;
        }
        const char ack = 'L';
        if (send(c->ctl, &ack, 1, MSG_NOSIGNAL) != 1) {
          /* the child is gone: its wait status and report say so */
        }
      }
      close(c->ctl);
      c->ctl = -1;
    }
    if (p[0].revents) break;
    if (p[1].revents) {
      char buf[16];
      ssize_t got = recv(control, buf, sizeof buf, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0 || buf[0] == 'K') { /* a kill request, or the supervisor is gone */
        terminate(c->pid, lim->is_init);
        break;
      }
    }
  }
  int status = 0;
  struct rusage usage;
  memset(&usage, 0, sizeof usage);
  while (wait4(c->pid, &status, 0, &usage) < 0) {
    if (errno != EINTR) {
      close(pidfd);
      return -1;
    }
  }
  /* Before the reply: whatever the child left running may still hold its stdout open. */
  kill_leftovers(c->pid, lim->is_init);
  if (c->ctl >= 0) close(c->ctl);
  c->ctl = -1;
  if (listener >= 0) {
    /* A call denied after the child's end by a process it left (now killed) is not counted:
     * one-shot runs end the same way (the init kills the rest when the program exits). */
    close(listener);
  }
  struct rusage after;
  if (getrusage(RUSAGE_CHILDREN, &after) != 0) {
    close(pidfd);
    return -1;
  }
  close(pidfd);
  char error[4096];
  ssize_t size;
  do size = read(c->report, error, sizeof error);
  while (size < 0 && errno == EINTR);
  close(c->report);
  if (size < 0) size = 0;
  if (size == 0 && own_error) {
    int n = snprintf(error, sizeof error, "%s: %s", own_error, strerror(own_errno));
    size = n > 0 ? (n < (int)sizeof error ? n : (int)sizeof error - 1) : 0;
  }
  if (size > 0) flags |= kSetupFailed;
  /* Peak memory: the child's own tree (RUSAGE_CHILDREN's maximum spans the server's life). */
  r.status = status;
  r.flags = flags;
  r.user_s = seconds(after.ru_utime) - seconds(before.ru_utime);
  r.system_s = seconds(after.ru_stime) - seconds(before.ru_stime);
  r.max_rss_kb = usage.ru_maxrss;
  return send_reply(control, &r, error, (size_t)size);
}

/* After a failure to start or clean up for the next child: answers the next request (if any)
 * with a setup failure naming the cause, which retires the server. */
static void fail_next_request(int control, const char* what) {
  char text[512];
  int n = snprintf(text, sizeof text, "%s: %s", what, strerror(errno));
  char tag;
  int fds[3], nfds;
  ssize_t got = receive(control, &tag, fds, 3, &nfds);
  for (int i = 0; i < nfds; ++i) close(fds[i]);
  if (got <= 0) return;
  struct reply r;
  memset(&r, 0, sizeof r);
  r.flags = kSetupFailed;
  send_reply(control, &r, text, n > 0 ? (size_t)n : 0);
}

/* fork_child for the next input, a failure answered on the next request: 1 in the child, 0 in
 * the server, -1 when the fork failed (the server then stops serving). */
static int fork_ahead(int control, const struct limits* lim, struct child* next) {
  const int forked = fork_child(control, lim, next);
  if (forked < 0) {
    fail_next_request(control, "fork");
    return -1;
  }
  return forked;
}

/* Serves until the supervisor hangs up (returns 0) or the server fails (-1, after answering the
 * next request with the reason). Returns 1 in each child: the caller runs the program there. */
EXPORT int distil_fork_server_serve(int control, int is_init, double wall_s, long long cpu_s, long long fsize_bytes,
                                    long long nofile, long long nproc, const void* filter, unsigned filter_len) {
  if (filter_len == 0 || filter_len > 0xFFFF) {
    errno = EINVAL;
    fail_next_request(control, "seccomp filter length");
    return -1;
  }
  struct limits lim = {is_init, wall_s, cpu_s, fsize_bytes, nofile, nproc, (const struct sock_filter*)filter,
                       (unsigned short)filter_len};
  /* The supervisor moved this process into the batch's cgroup before its 'G': a cgroup namespace
   * rooted there makes every child see its cgroup as "/", as one-shot programs do, instead of
   * the host's path to it. */
  if (is_init && unshare(CLONE_NEWCGROUP) != 0) {
    fail_next_request(control, "unshare(CLONE_NEWCGROUP)");
    return -1;
  }
  struct child next;
  const int forked = fork_ahead(control, &lim, &next);
  if (forked != 0) return forked;
  for (;;) {
    char tag = 0;
    int fds[3], nfds = 0;
    ssize_t n = receive(control, &tag, fds, 3, &nfds);
    if (n <= 0) { /* the supervisor hung up: retire the waiting child */
      close(next.ctl);
      close(next.report);
      kill(next.pid, SIGKILL);
      while (waitpid(next.pid, NULL, 0) < 0 && errno == EINTR) {
      }
      return n == 0 ? 0 : -1;
    }
    if (tag != 'R' || nfds != 3) { /* a late kill request, or malformed */
      for (int i = 0; i < nfds; ++i) close(fds[i]);
      continue;
    }
    if (run_one(control, &lim, &next, fds) != 0) return -1;
    /* After the reply, while the supervisor reads the result: the next child must start from an
     * empty /tmp, and is forked only once it is. */
    if (wipe_tmp() != 0) {
      fail_next_request(control, "cleaning /tmp");
      return -1;
    }
    const int again = fork_ahead(control, &lim, &next);
    if (again != 0) return again;
  }
}

/* Kills and reaps a child forked ahead that will not get an input. It never ran user code. */
static void retire_child(struct child* c) {
  close(c->ctl);
  close(c->report);
  kill(c->pid, SIGKILL);
  while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* A warm server: serves batch after batch of different programs until the supervisor hangs up
 * (returns 0) or it fails (-1). The server is program-agnostic: the supervisor writes each
 * batch's program into /box (a read-only bind of its host directory) and sends
 *   'B' + struct batch_limits   the next batch's limits: the child for its first input is forked
 *   'R' + 3 descriptors         one input, as in distil_fork_server_serve
 *   'E'                         the batch is over: the waiting child is retired, leftovers killed
 *                               and reaped, /tmp emptied, then a reply with kBatchEnded
 * Returns 1 in each child (sandboxed, holding the run's pipes), which then reads the batch's
 * program from /box and runs it: nothing of any program ever runs in this process, so each
 * batch's children start from the same interpreter as the first batch's. */
EXPORT int distil_fork_server_warm(int control, int is_init, const void* filter, unsigned filter_len) {
  if (filter_len == 0 || filter_len > 0xFFFF) {
    errno = EINVAL;
    fail_next_request(control, "seccomp filter length");
    return -1;
  }
  struct limits lim = {is_init, 0.0, 0, 0, 0, 0, (const struct sock_filter*)filter, (unsigned short)filter_len};
  /* As distil_fork_server_serve: in its cgroup since before 'G', so every batch's children see
   * their cgroup as "/" (the zygote's cgroup is the same for all its batches). */
  if (is_init && unshare(CLONE_NEWCGROUP) != 0) {
    fail_next_request(control, "unshare(CLONE_NEWCGROUP)");
    return -1;
  }
  struct child next;
  int waiting = 0; /* a child is forked ahead for the next input */
  for (;;) {
    char data[1 + sizeof(struct batch_limits)];
    int fds[3], nfds = 0;
    ssize_t n = receive_into(control, data, sizeof data, fds, 3, &nfds);
    if (n <= 0) { /* the supervisor hung up */
      for (int i = 0; i < nfds; ++i) close(fds[i]);
      if (waiting) retire_child(&next);
      return n == 0 ? 0 : -1;
    }
    if (data[0] == 'R' && n == 1 && nfds == 3) {
      if (!waiting) { /* an input outside a batch: a protocol error */
        for (int i = 0; i < 3; ++i) close(fds[i]);
        errno = EPROTO;
        struct reply r = {0, kSetupFailed, 0.0, 0.0, 0, 0, 0};
        send_reply(control, &r, "input outside a batch", 21);
        return -1;
      }
      waiting = 0;
      if (run_one(control, &lim, &next, fds) != 0) return -1;
      if (wipe_tmp() != 0) {
        fail_next_request(control, "cleaning /tmp");
        return -1;
      }
      const int forked = fork_ahead(control, &lim, &next);
      if (forked != 0) return forked;
      waiting = 1;
      continue;
    }
    for (int i = 0; i < nfds; ++i) close(fds[i]);
    if (data[0] == 'B' && n == (ssize_t)sizeof data) {
      if (waiting) retire_child(&next);
      waiting = 0;
      struct batch_limits b;
      memcpy(&b, data + 1, sizeof b);
      if (!(b.wall_s > 0) || b.cpu_s < 1 || b.fsize_bytes < 0 || b.nofile < 1 || b.nproc < 1) {
        errno = EINVAL;
        fail_next_request(control, "batch limits");
        return -1;
      }
      lim.wall_s = b.wall_s;
      lim.cpu_s = b.cpu_s;
      lim.fsize_bytes = b.fsize_bytes;
      lim.nofile = b.nofile;
      lim.nproc = b.nproc;
      const int forked = fork_ahead(control, &lim, &next);
      if (forked != 0) return forked;
      waiting = 1;
    } else if (data[0] == 'E' && n == 1) {
      /* Between batches exactly what is between inputs, once more: no process but this one, an
       * empty /tmp. (After the batch's last input both hold already; this makes the reply a
       * statement about the server's state, whatever the batch ended with.) */
      if (waiting) retire_child(&next);
      waiting = 0;
      if (is_init) kill_leftovers(0, 1); /* (not init: each child's group went with it) */
      if (wipe_tmp() != 0) return -1; /* the supervisor sees no acknowledgement and retires us */
      struct reply r = {0, kBatchEnded, 0.0, 0.0, 0, 0, 0};
      if (send_reply(control, &r, "", 0) != 0) return -1;
    }
    /* anything else: a late kill request ('K') for a child already reaped; ignored */
  }
}
