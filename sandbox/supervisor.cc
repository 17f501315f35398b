#include "sandbox/supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>

#include "sandbox/namespaces.h"
#include "sandbox/root_fs.h"
#include "sandbox/seccomp_policy.h"

// Linux 6.6: wake the notifying thread on the answering CPU (no scheduler round trip).
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

namespace distil::sandbox::detail {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

struct Pipe {
  UniqueFd read, write;
};

// Pipes are close-on-exec on both ends; the child moves its ends to 0/1/2 explicitly. Child ends
// are moved above 2 so that dup2 onto 0..2 never overwrites one another.
Pipe make_pipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(errno_text("pipe2"));
  Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1])};
  for (UniqueFd* end : {&p.read, &p.write}) {
    if (end->get() <= 2) {
      const int moved = fcntl(end->get(), F_DUPFD_CLOEXEC, 3);
      if (moved < 0) throw std::runtime_error(errno_text("fcntl(F_DUPFD_CLOEXEC)"));
      end->reset(moved);
    }
  }
  return p;
}

void set_nonblocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throw std::runtime_error(errno_text("fcntl(O_NONBLOCK)"));
}

double seconds(const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; }

}  // namespace

CpuMeter::CpuMeter(pid_t root, bool count_root_self, const RunCgroup* cgroup)
    : root_(root), count_root_self_(count_root_self), cgroup_(cgroup) {
  ProcStat st;
  if (read_stat(root_, st)) baseline_ = st.reaped;
}

bool CpuMeter::read_stat(pid_t pid, ProcStat& out) {
  char path[64], buf[1024];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", static_cast<int>(pid));
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n;
  do n = read(fd, buf, sizeof(buf) - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // "pid (comm) state ppid pgrp session ..." with comm free text: fields count from the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (!p) return false;
  ++p;
  // Fields 3.. after it: state(3) ppid pgrp session(6) tty tpgid flags minflt cminflt majflt
  // cmajflt utime(14) stime cutime cstime(17).
  long long field[18] = {};
  char* end = nullptr;
  const char* at = p;
  for (int i = 3; i <= 17; ++i) {
    while (*at == ' ') ++at;
    if (i == 3) {  // the state letter
      if (!*at) return false;
      ++at;
      continue;
    }
    field[i] = std::strtoll(at, &end, 10);
    if (end == at) return false;
    at = end;
  }
  out.session = static_cast<pid_t>(field[6]);
  out.own = field[14] + field[15];
  out.reaped = field[16] + field[17];
  return true;
}

std::vector<pid_t> CpuMeter::processes() const {
  if (cgroup_) return cgroup_->pids();
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (!dir) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (pid > 0 && *end == '\0') out.push_back(static_cast<pid_t>(pid));
  }
  closedir(dir);
  return out;
}

double CpuMeter::sample() const {
  // The root first (see the header): what it reaps after this read is not counted twice.
  ProcStat root;
  if (!read_stat(root_, root)) return 0;
  long long ticks = root.reaped - baseline_ + (count_root_self_ ? root.own : 0);
  for (const pid_t pid : processes()) {
    ProcStat st;
    if (pid == root_ || !read_stat(pid, st) || st.session != root_) continue;
    ticks += st.own;
  }
  static const long hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  return static_cast<double>(ticks) / static_cast<double>(hz);
}

CpuSchedule::CpuSchedule(Clock::time_point started, double cpu_limit_s) {
  const double cpus = static_cast<double>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  const double interval = std::clamp(cpu_limit_s / 10, 0.05, 0.25);
  const double first = std::max(interval, 0.9 * cpu_limit_s / cpus);
  auto to_duration = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  interval_ = to_duration(interval);
  next_ = cpu_limit_s > 0 ? started + to_duration(first) : Clock::time_point::max();
}

void CpuSchedule::advance(Clock::time_point now) {
  if (next_ == Clock::time_point::max()) return;
  next_ = std::max(next_ + interval_, now);
}

void kill_tree(const ChildProcess& child) {
  // With a PID namespace the child is its init: killing it kills everything inside. Without,
  // it leads its own process group (setsid is denied to user code).
  if (!child.namespaces) kill(-child.pid, SIGKILL);
  if (child.pidfd.valid()) syscall(SYS_pidfd_send_signal, child.pidfd.get(), SIGKILL, nullptr, 0);
  else kill(child.pid, SIGKILL);
}


ArgvBuilder::ArgvBuilder(std::vector<std::string> items) : items_(std::move(items)) {
  for (auto& item : items_) pointers_.push_back(item.data());
  pointers_.push_back(nullptr);
}

ChildProcess spawn_child(SpawnOptions& options) {
  Pipe in = make_pipe(), out = make_pipe(), err = make_pipe(), status = make_pipe();
  std::optional<Pipe> sync;
  if (options.namespaces || options.cgroup) sync = make_pipe();

  ChildPlan& plan = options.plan;
  plan.stdin_fd = in.read.get();
  plan.stdout_fd = out.write.get();
  plan.stderr_fd = err.write.get();
  plan.status_fd = status.write.get();
  plan.sync_fd = sync ? sync->read.get() : -1;
  // cgroup v1: the child moves itself (fast; RunCgroup::self_move_fd); otherwise the supervisor
  // moves it while it builds its root and releases the program with a second byte.
  plan.cgroup_self_fd = options.cgroup ? options.cgroup->self_move_fd() : -1;
  plan.second_release = options.cgroup != nullptr && plan.cgroup_self_fd < 0;
  plan.keep_fd = options.keep_fd;

  ChildProcess child;
  child.namespaces = options.namespaces;
  child.started = Clock::now();
  int pidfd = -1;
  // A fork-like clone (no CLONE_VM): the child gets its own copy of memory and errno, and only
  // makes raw system calls until exec (see child.h).
  unsigned long flags = CLONE_PIDFD | SIGCHLD;
  if (options.namespaces) flags |= static_cast<unsigned long>(namespace_clone_flags());
  const long pid = syscall(SYS_clone, flags, nullptr, &pidfd, nullptr, nullptr);
  if (pid < 0) throw std::runtime_error(errno_text("clone"));
  if (pid == 0) {
    child_main(&plan);
    _exit(127);
  }
  child.pid = static_cast<pid_t>(pid);
  child.pidfd.reset(pidfd);

  in.read.reset();
  out.write.reset();
  err.write.reset();
  status.write.reset();
  if (sync) {
    sync->read.reset();
    auto abandon = [&child](const std::string& why) {
      kill_tree(child);
      waitpid(child.pid, nullptr, 0);
      throw std::runtime_error(why);
    };
    const std::string map_error =
        options.namespaces ? write_id_maps(child.pid, options.outside_root, options.privileged_maps) : std::string();
    if (!map_error.empty()) abandon("writing the sandbox uid/gid maps: " + map_error);
    const char go = 1;
    if (write(sync->write.get(), &go, 1) != 1) abandon(errno_text("releasing the sandbox child"));
    // Where the child cannot move itself (cgroup v2), it builds its root meanwhile (the move
    // waits for an RCU grace period) and starts the program only after the second byte.
    if (plan.second_release) {
      if (const std::string error = options.cgroup->add(child.pid); !error.empty())
        abandon("moving the sandbox into its cgroup: " + error);
      if (write(sync->write.get(), &go, 1) != 1) abandon(errno_text("releasing the sandbox child"));
    }
  }
  child.stdin_w = std::move(in.write);
  child.stdout_r = std::move(out.read);
  child.stderr_r = std::move(err.read);
  child.status_r = std::move(status.read);
  return child;
}

namespace {

constexpr std::size_t kArenaSize = 8u << 20;  // larger plans (huge programs) spawn the usual way

// Bump allocator over a parked child's arena.
class ArenaWriter {
 public:
  ArenaWriter(void* base, std::size_t size) : next_(static_cast<char*>(base)), end_(next_ + size) {}
  template <class T>
  T* alloc(std::size_t n = 1) {
    const auto at = reinterpret_cast<std::uintptr_t>(next_);
    char* p = next_ + ((alignof(T) - at % alignof(T)) % alignof(T));
    if (!ok_ || p > end_ || static_cast<std::size_t>(end_ - p) < n * sizeof(T)) {
      ok_ = false;
      return nullptr;
    }
    next_ = p + n * sizeof(T);
    return reinterpret_cast<T*>(p);
  }
  const char* bytes(const char* s, std::size_t n) {
    char* d = alloc<char>(n + 1);
    if (!d) return nullptr;
    std::memcpy(d, s, n);
    d[n] = '\0';
    return d;
  }
  const char* str(const char* s) { return s ? bytes(s, std::strlen(s)) : nullptr; }
  char* const* strings(char* const* v) {
    if (!v) return nullptr;
    std::size_t n = 0;
    while (v[n]) ++n;
    char** d = alloc<char*>(n + 1);
    if (!d) return nullptr;
    for (std::size_t i = 0; i < n; ++i) d[i] = const_cast<char*>(str(v[i]));
    d[n] = nullptr;
    return d;
  }
  bool ok() const { return ok_; }
  std::size_t left() const { return static_cast<std::size_t>(end_ - next_); }

 private:
  char* next_;
  char* end_;
  bool ok_ = true;
};

RootPlan* copy_root(const RootPlan& src, ArenaWriter& w) {
  auto* root = w.alloc<RootPlan>();
  auto* steps = w.alloc<RootStep>(static_cast<std::size_t>(src.step_count));
  if (!root || !steps) return nullptr;
  new (root) RootPlan(src);
  root->staging = w.str(src.staging);
  root->root_options = w.str(src.root_options);
  for (int i = 0; i < src.step_count; ++i) {
    const RootStep& from = src.steps[i];
    RootStep* to = new (&steps[i]) RootStep(from);
    to->source = w.str(from.source);
    to->target = w.str(from.target);
    if (from.data) to->data = from.kind == RootStep::Kind::file ? w.bytes(from.data, from.size) : w.str(from.data);
  }
  root->steps = steps;
  return root;
}

// A deep copy of `src` (every string, step, argument and the seccomp program) in the arena.
ChildPlan* copy_plan(const ChildPlan& src, ArenaWriter& w) {
  auto* plan = w.alloc<ChildPlan>();
  if (!plan) return nullptr;
  new (plan) ChildPlan(src);
  if (src.root && !(plan->root = copy_root(*src.root, w))) return nullptr;
  plan->hostname = w.str(src.hostname);
  plan->work_dir = w.str(src.work_dir);
  plan->executable = w.str(src.executable);
  plan->argv = w.strings(src.argv);
  plan->envp = w.strings(src.envp);
  if (src.seccomp) {
    auto* prog = w.alloc<sock_fprog>();
    auto* filter = w.alloc<sock_filter>(src.seccomp->len);
    if (!prog || !filter) return nullptr;
    std::memcpy(filter, src.seccomp->filter, src.seccomp->len * sizeof(sock_filter));
    prog->len = src.seccomp->len;
    prog->filter = filter;
    plan->seccomp = prog;
  }
  return w.ok() ? plan : nullptr;
}

constexpr std::size_t kArenaHeader = 64;
static_assert(sizeof(ArenaHeader) <= kArenaHeader);

}  // namespace

ParkedChild::~ParkedChild() {
  if (child.pid > 0) {
    kill_tree(child);
    while (waitpid(child.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  if (arena) munmap(arena, arena_size);
}

std::unique_ptr<ParkedChild> spawn_parked(bool namespaces, unsigned outside_root, bool privileged_maps,
                                          std::unique_ptr<RunCgroup> cgroup, const RootPlan* generic_root,
                                          std::string& error) {
  auto parked = std::make_unique<ParkedChild>();
  try {
    void* arena = mmap(nullptr, kArenaSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (arena == MAP_FAILED) throw std::runtime_error(errno_text("mmap (plan arena)"));
    parked->arena = arena;
    parked->arena_size = kArenaSize;
    new (arena) ArenaHeader{nullptr, 0};
    parked->arena_used = kArenaHeader;
    ParkedStart start;
    start.arena = arena;
    start.cgroup_self_fd = cgroup ? cgroup->self_move_fd() : -1;
    if (namespaces && generic_root) {
      ArenaWriter writer(static_cast<char*>(arena) + kArenaHeader, kArenaSize - kArenaHeader);
      start.generic_root = copy_root(*generic_root, writer);
      if (!start.generic_root || !writer.ok()) throw std::runtime_error("the generic root plan does not fit its arena");
      parked->arena_used = kArenaSize - writer.left();
      parked->generic_signature = generic_signature(*generic_root);
    }
    Pipe in = make_pipe(), out = make_pipe(), err = make_pipe(), status = make_pipe(), release = make_pipe();
    const int fds[5] = {in.read.get(), out.write.get(), err.write.get(), status.write.get(), release.read.get()};
    for (int i = 0; i < 5; ++i) start.fds[i] = fds[i];
    for (int i = 0; i < 4; ++i) parked->child_fds[i] = fds[i];
    unsigned long flags = CLONE_PIDFD | SIGCHLD;
    if (namespaces) flags |= static_cast<unsigned long>(namespace_clone_flags());
    int pidfd = -1;
    const long pid = syscall(SYS_clone, flags, nullptr, &pidfd, nullptr, nullptr);
    if (pid < 0) throw std::runtime_error(errno_text("clone"));
    if (pid == 0) {
      parked_main(&start);
      _exit(127);
    }
    ChildProcess& child = parked->child;
    child.pid = static_cast<pid_t>(pid);
    // Later clones (other runs, their init stubs, which never exec) must not share this
    // child's plan. (One cloned meanwhile by another thread only shares a mapping it never uses.)
    if (madvise(arena, kArenaSize, MADV_DONTFORK) != 0) {
      child.pidfd.reset(pidfd);
      throw std::runtime_error(errno_text("madvise(MADV_DONTFORK) on the plan arena"));
    }
    child.pidfd.reset(pidfd);
    child.namespaces = namespaces;
    in.read.reset();
    out.write.reset();
    err.write.reset();
    status.write.reset();
    release.read.reset();
    child.stdin_w = std::move(in.write);
    child.stdout_r = std::move(out.read);
    child.stderr_r = std::move(err.read);
    child.status_r = std::move(status.read);
    parked->release = std::move(release.write);
    if (namespaces)
      if (const std::string e = write_id_maps(child.pid, outside_root, privileged_maps); !e.empty())
        throw std::runtime_error("writing the sandbox uid/gid maps: " + e);
    // The child builds the generic root while the cgroup move below waits.
    const char go = 1;
    if (start.generic_root && write(parked->release.get(), &go, 1) != 1)
      throw std::runtime_error(errno_text("releasing the prespawned child"));
    if (cgroup && start.cgroup_self_fd < 0)
      if (const std::string e = cgroup->add(child.pid); !e.empty())
        throw std::runtime_error("moving the sandbox into its cgroup: " + e);
    parked->cgroup = std::move(cgroup);
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;  // ~ParkedChild kills what was started
  }
  return parked;
}

bool release_parked(ParkedChild& parked, const ChildPlan& src, ChildProcess& out) {
  if (parked.child.pid <= 0) return false;
  const bool generic_built = !parked.generic_signature.empty();
  // The child set up the root's common part for this Sandbox's configuration: the run's own
  // must start with exactly that.
  if (generic_built && (!src.root || generic_signature(*src.root) != parked.generic_signature)) return false;
  ArenaWriter writer(static_cast<char*>(parked.arena) + parked.arena_used, parked.arena_size - parked.arena_used);
  ChildPlan* plan = copy_plan(src, writer);
  if (!plan) return false;
  if (generic_built) {
    const_cast<RootPlan*>(plan->root)->generic_done = true;
    plan->setup_started = true;
  }
  plan->stdin_fd = parked.child_fds[0];
  plan->stdout_fd = parked.child_fds[1];
  plan->stderr_fd = parked.child_fds[2];
  plan->status_fd = parked.child_fds[3];
  plan->sync_fd = -1;
  plan->second_release = false;
  plan->keep_fd = -1;
  static_cast<ArenaHeader*>(parked.arena)->plan = plan;
  const char go = 1;
  if (write(parked.release.get(), &go, 1) != 1) return false;
  parked.release.reset();
  out = std::move(parked.child);
  parked.child.pid = -1;
  out.started = Clock::now();
  return true;
}

void CappedBuffer::append(const char* p, std::size_t n) {
  const std::size_t room = data.size() < cap ? cap - data.size() : 0;
  if (n > room) truncated = true;
  data.append(p, std::min(n, room));
}

StdioPump::StdioPump(UniqueFd stdin_w, const std::string& stdin_data, UniqueFd stdout_r, UniqueFd stderr_r,
                     std::size_t cap, std::size_t stderr_cap)
    : stdin_w_(std::move(stdin_w)), stdout_r_(std::move(stdout_r)), stderr_r_(std::move(stderr_r)),
      stdin_data_(stdin_data) {
  out_.cap = cap;
  err_.cap = stderr_cap ? stderr_cap : cap;
  // SIGPIPE is not an option for a server: writes to a closed stdin must return EPIPE.
  if (stdin_w_.valid()) {
    set_nonblocking(stdin_w_.get());
    if (stdin_data_.empty()) stdin_w_.reset();
  }
  if (stdout_r_.valid()) set_nonblocking(stdout_r_.get());
  else out_.open = false;
  if (stderr_r_.valid()) set_nonblocking(stderr_r_.get());
  else err_.open = false;
}

void StdioPump::add_to(std::vector<pollfd>& fds) {
  polled_ = 0;
  if (stdin_w_.valid()) {
    fds.push_back({stdin_w_.get(), POLLOUT, 0});
    kinds_[polled_++] = 0;
  }
  if (stdout_r_.valid()) {
    fds.push_back({stdout_r_.get(), POLLIN, 0});
    kinds_[polled_++] = 1;
  }
  if (stderr_r_.valid()) {
    fds.push_back({stderr_r_.get(), POLLIN, 0});
    kinds_[polled_++] = 2;
  }
}

void StdioPump::read_into(UniqueFd& fd, CappedBuffer& buffer) {
  char chunk[65536];
  for (int rounds = 0; rounds < 16; ++rounds) {
    const ssize_t n = read(fd.get(), chunk, sizeof(chunk));
    if (n > 0) {
      buffer.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    fd.reset();  // EOF or error: the stream is over
    buffer.open = false;
    return;
  }
}

void StdioPump::handle(const std::vector<pollfd>& fds, std::size_t first) {
  for (std::size_t i = 0; i < polled_; ++i) {
    const pollfd& p = fds[first + i];
    if (p.revents == 0) continue;
    switch (kinds_[i]) {
      case 0: {
        if (!stdin_w_.valid()) break;
        if (p.revents & (POLLERR | POLLHUP)) {
          stdin_w_.reset();
          break;
        }
        const ssize_t n = write(stdin_w_.get(), stdin_data_.data() + stdin_written_, stdin_data_.size() - stdin_written_);
        if (n > 0) stdin_written_ += static_cast<std::size_t>(n);
        else if (n < 0 && errno != EAGAIN && errno != EINTR) stdin_w_.reset();  // EPIPE: reader gone
        if (stdin_written_ == stdin_data_.size()) stdin_w_.reset();               // EOF for the program
        break;
      }
      case 1:
        if (stdout_r_.valid()) read_into(stdout_r_, out_);
        break;
      case 2:
        if (stderr_r_.valid()) read_into(stderr_r_, err_);
        break;
    }
  }
}

void StdioPump::close_all() {
  stdin_w_.reset();
  stdout_r_.reset();
  stderr_r_.reset();
  out_.open = err_.open = false;
}

SetupMonitor::SetupMonitor(ChildProcess& child, const std::vector<std::string>* root_step_targets)
    : child_(child), root_step_targets_(root_step_targets) {}

void SetupMonitor::add_to(std::vector<pollfd>& fds) {
  fds.push_back({child_.status_r.valid() ? child_.status_r.get() : -1, POLLIN, 0});
  fds.push_back({listener_.valid() ? listener_.get() : -1, POLLIN, 0});
}

void SetupMonitor::handle(const std::vector<pollfd>& fds, std::size_t first) {
  if (fds[first].revents) read_status();
  if (fds[first + 1].revents & POLLIN) answer_notification();
  else if (fds[first + 1].revents & (POLLHUP | POLLERR)) listener_.reset();
}

void SetupMonitor::read_status() {
  char buf[sizeof(ChildFailure) * 4];
  for (;;) {
    const ssize_t n = read(child_.status_r.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      child_.status_r.reset();  // EOF: exec happened or the child is gone
      return;
    }
    pending_.append(buf, static_cast<std::size_t>(n));
    while (pending_.size() >= sizeof(ChildFailure)) {
      ChildFailure record;
      std::memcpy(&record, pending_.data(), sizeof(record));
      pending_.erase(0, sizeof(record));
      const auto step = static_cast<ChildStep>(record.step);
      if (step == ChildStep::listener_fd) {
        const long fd = syscall(SYS_pidfd_getfd, child_.pidfd.get(), record.error, 0);
        if (fd < 0) {
          failed = true;
          message = errno_text("copying the seccomp listener from the child");
          kill_tree(child_);
        } else {
          listener_.reset(static_cast<int>(fd));
          // A speed-up only: older kernels refuse it and the notification works as before.
          ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
        }
        continue;
      }
      if (step == ChildStep::program_exit) {
        program_exited = true;
        program_status = record.error;
        program_cpu_s = static_cast<double>(record.cpu_us) / 1e6;
        program_maxrss_kb = record.maxrss_kb > 0 ? static_cast<std::size_t>(record.maxrss_kb) : 0;
        continue;
      }
      failed = true;
      message = std::string("sandbox setup failed at '") + child_step_name(step) + "'";
      if (step == ChildStep::root_step && root_step_targets_ && record.detail >= 0 &&
          static_cast<std::size_t>(record.detail) < root_step_targets_->size())
        message += " (" + (*root_step_targets_)[static_cast<std::size_t>(record.detail)] + ")";
      message += ": ";
      message += std::strerror(record.error);
    }
    if (n < static_cast<ssize_t>(sizeof(buf))) return;
  }
}

void SetupMonitor::answer_notification() {
  seccomp_notif request{};
  if (ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_RECV, &request) != 0) {
    if (errno != EINTR && errno != ENOENT) listener_.reset();  // all filter users are gone
    return;
  }
  if (!is_exec_syscall(request.data.arch, request.data.nr)) {
    // A call the filter denies (its default action and its kill list notify so the verdict can
    // name the call). It has not run and never will: the caller stays blocked in it until the
    // whole sandbox (its PID namespace's init, or without one its process group) dies, now.
    // Killing the tree rather than the calling thread's process needs no pid (which could be
    // reused): any process of the run making a denied call ends the run.
    if (denied_syscall < 0) {
      denied_syscall = request.data.nr;
      denied_arch = request.data.arch;
    }
    kill_tree(child_);
    return;
  }
  seccomp_notif_resp response{};
  response.id = request.id;
  // The first exec is the sandbox starting the interpreter (or the compiled program); any
  // later one is user code trying to run something else.
  if (execs_allowed_ == 0) {
    ++execs_allowed_;
    response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  } else {
    response.error = -EPERM;
    exec_denied = true;
  }
  ioctl(listener_.get(), SECCOMP_IOCTL_NOTIF_SEND, &response);  // ENOENT: the caller died; fine
}

std::string await_exec(ChildProcess& child, SetupMonitor& monitor, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  std::vector<pollfd> fds;
  while (monitor.exec_pending() && !monitor.failed) {
    const auto now = Clock::now();
    if (now >= deadline) return "the sandboxed process did not start within " + std::to_string(timeout_s) + " s";
    fds.clear();
    monitor.add_to(fds);
    fds.push_back({child.pidfd.get(), POLLIN, 0});
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
    if (poll(fds.data(), fds.size(), static_cast<int>(ms)) < 0 && errno != EINTR) return errno_text("poll");
    monitor.handle(fds, 0);
    if (fds[2].revents & POLLIN) {
      if (monitor.exec_pending()) monitor.read_status();
      if (!monitor.failed) return "the sandboxed process exited during setup";
    }
  }
  return monitor.failed ? monitor.message : std::string();
}

Termination supervise(ChildProcess& child, StdioPump& pump, double wall_limit_s,
                      const std::vector<std::string>* root_step_targets, double cpu_limit_s,
                      const RunCgroup* cgroup) {
  Termination t;
  const auto deadline = child.started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(wall_limit_s));
  SetupMonitor monitor(child, root_step_targets);
  // The child is the sandbox's init (or, without a PID namespace, the program): its own time
  // and everything it reaps is the run's.
  const CpuMeter meter(child.pid, true, cgroup);
  CpuSchedule schedule(child.started, cpu_limit_s);
  bool exited = false;
  Clock::time_point exit_seen;

  std::vector<pollfd> fds;
  for (;;) {
    const auto now = Clock::now();
    if (!exited && now >= deadline) {
      t.killed_for_time = true;
      kill_tree(child);
    }
    if (!exited && pump.stdout_over_cap() && !t.killed_for_output) {
      t.killed_for_output = true;
      kill_tree(child);
    }
    if (!exited && !monitor.program_exited && !t.killed_for_cpu && schedule.due(now)) {
      schedule.advance(now);
      t.sampled_cpu_s = std::max(t.sampled_cpu_s, meter.sample());
      if (t.sampled_cpu_s > cpu_limit_s) {
        t.killed_for_cpu = true;
        kill_tree(child);
      }
    }
    // After the exit, leftover writers (only possible without a PID namespace) get a short grace.
    if (exited && (!pump.outputs_open() || now - exit_seen > std::chrono::milliseconds(200))) break;
    // The init stub reported the program's end after killing and reaping everything else, so
    // nothing can write any more: the run is judged without waiting for the stub's own exit.
    if (!exited && monitor.program_exited && !pump.outputs_open() && !t.killed_for_time && !t.killed_for_output &&
        !t.killed_for_cpu) {
      t.unreaped = true;
      break;
    }

    fds.clear();
    fds.push_back({child.pidfd.get(), static_cast<short>(exited ? 0 : POLLIN), 0});
    monitor.add_to(fds);
    const std::size_t pump_first = fds.size();
    pump.add_to(fds);

    const bool sampling = !exited && !monitor.program_exited && !t.killed_for_cpu;
    auto wait_until = exited ? exit_seen + std::chrono::milliseconds(200) : sampling ? std::min(deadline, schedule.next()) : deadline;
    auto timeout_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wait_until - now).count() + 1;
    if (timeout_ms < 0) timeout_ms = 0;
    const int ready = poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(timeout_ms, 1000)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      monitor.failed = true;
      monitor.message = errno_text("poll");
      kill_tree(child);
    }
    const bool reported = monitor.program_exited;
    monitor.handle(fds, 1);
    pump.handle(fds, pump_first);
    if (!reported && monitor.program_exited && !exited)
      t.wall_time_s = std::chrono::duration<double>(Clock::now() - child.started).count();
    if (!exited && (fds[0].revents & POLLIN)) {
      exited = true;
      exit_seen = Clock::now();
      t.wall_time_s = std::chrono::duration<double>(exit_seen - child.started).count();
      if (!child.namespaces) kill(-child.pid, SIGKILL);  // descendants outlive a plain leader
    }
  }
  // (The stub holds the status pipe until it exits: no final read when it is still exiting.)
  if (monitor.exec_pending() && !t.unreaped) monitor.read_status();
  pump.close_all();
  t.setup_failed = monitor.failed;
  t.setup_message = monitor.message;
  t.exec_denied = monitor.exec_denied;
  t.denied_syscall = monitor.denied_syscall;
  t.denied_arch = monitor.denied_arch;
  if (t.unreaped) {
    const int status = monitor.program_status;
    if (WIFEXITED(status)) {
      t.exited = true;
      t.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      t.signal = WTERMSIG(status);
    }
    t.cpu_time_s = monitor.program_cpu_s;
    t.peak_memory_kb = monitor.program_maxrss_kb;
    return t;
  }

  int status = 0;
  rusage usage{};
  while (wait4(child.pid, &status, 0, &usage) < 0) {
    if (errno != EINTR) {
      t.setup_failed = true;
      t.setup_message = errno_text("wait4");
      return t;
    }
  }
  // Under the init stub, the sandbox's own exit says nothing; the program's status does (absent
  // when the stub was killed, e.g. at the deadline).
  if (monitor.program_exited) status = monitor.program_status;
  if (WIFEXITED(status)) {
    t.exited = true;
    t.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    t.signal = WTERMSIG(status);
  }
  t.cpu_time_s = seconds(usage.ru_utime) + seconds(usage.ru_stime);
  t.peak_memory_kb = static_cast<std::size_t>(usage.ru_maxrss);
  return t;
}

Reaper::~Reaper() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    // Their runs are judged; only their exit is left to wait for.
    for (const auto& e : entries_) kill_tree(e.child);
  }
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }
  for (auto& e : entries_) finish(e);
}

void Reaper::finish(Entry& entry) {
  while (waitpid(entry.child.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  entry.child.pidfd.reset();
  entry.cgroup.reset();  // back to the pool, empty
}

void Reaper::adopt(ChildProcess child, std::unique_ptr<RunCgroup> cgroup) {
  Entry entry{std::move(child), std::move(cgroup)};
  std::unique_lock lock(mutex_);
  if (!thread_.joinable() && !stopping_) {
    try {
      wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (wake_.valid()) thread_ = std::thread([this] { loop(); });
    } catch (const std::exception&) {
      wake_.reset();
    }
  }
  if (!thread_.joinable() || !entry.child.pidfd.valid()) {
    lock.unlock();
    finish(entry);  // no thread: wait here, as before
    return;
  }
  entries_.push_back(std::move(entry));
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = write(wake_.get(), &one, sizeof(one));
}

void Reaper::loop() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake_.get(), POLLIN, 0});
    {
      std::lock_guard lock(mutex_);
      if (stopping_ && entries_.empty()) return;
      for (const auto& e : entries_) fds.push_back({e.child.pidfd.get(), POLLIN, 0});
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (fds[0].revents & POLLIN) {
      std::uint64_t count;
      [[maybe_unused]] const ssize_t n = read(wake_.get(), &count, sizeof(count));
    }
    std::vector<Entry> done;
    {
      std::lock_guard lock(mutex_);
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
          if (it->child.pidfd.get() == fds[i].fd) {
            done.push_back(std::move(*it));
            entries_.erase(it);
            ++finishing_;
            break;
          }
        }
      }
    }
    for (auto& e : done) finish(e);
    if (!done.empty()) {
      std::lock_guard lock(mutex_);
      finishing_ -= done.size();
      drained_.notify_all();
    }
  }
}

void Reaper::drain() {
  std::unique_lock lock(mutex_);
  drained_.wait(lock, [this] { return entries_.empty() && finishing_ == 0; });
}

namespace {

bool ends_with_memory_error(const std::string& err) {
  // CPython's last line for an allocation failure; C++'s std::bad_alloc through terminate.
  std::size_t end = err.size();
  while (end > 0 && (err[end - 1] == '\n' || err[end - 1] == '\r')) --end;
  const std::size_t start = err.rfind('\n', end ? end - 1 : 0);
  const std::string last = err.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1));
  return last.rfind("MemoryError", 0) == 0 || err.find("std::bad_alloc") != std::string::npos;
}

}  // namespace

RunResult make_result(const Termination& t, StdioPump& pump, const Limits& limits) {
  RunResult r;
  r.stdout_data = std::move(pump.out().data);
  r.stderr_data = std::move(pump.err().data);
  r.stdout_truncated = pump.out().truncated;
  r.stderr_truncated = pump.err().truncated;
  // The final figure is exact unless the run was killed from outside (the namespace's teardown
  // discards what its last processes used); a sample taken while it ran is a lower bound.
  r.cpu_time_s = std::max(t.cpu_time_s, t.sampled_cpu_s);
  r.wall_time_s = t.wall_time_s;
  r.peak_memory_kb = t.peak_memory_kb;
  r.exit_code = t.exited ? t.exit_code : -1;
  r.signal = t.signal;
  if (t.setup_failed) {
    r.verdict = Verdict::sandbox_error;
    r.message = t.setup_message;
    return r;
  }
  const double cpu_limit = limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0;
  if (t.memory_exceeded) {
    // An OOM kill inside the run explains whatever followed (a hang waiting for a killed
    // process, a broken pipe), so it outranks the other verdicts.
    r.verdict = Verdict::memory_limit;
    r.message = "memory limit exceeded (cgroup OOM kill)";
  } else if (t.killed_for_time) {
    r.verdict = Verdict::time_limit;
    r.message = "wall-clock limit exceeded";
  } else if (t.killed_for_cpu || t.signal == SIGXCPU || r.cpu_time_s > cpu_limit ||
             (t.signal == SIGKILL && t.denied_syscall < 0 && r.cpu_time_s >= 0.9 * std::ceil(cpu_limit))) {
    // The kernel's CPU accounting for RLIMIT_CPU and rusage's user/system split differ a little,
    // so a SIGKILL at the hard limit can come with rusage just under it.
    r.verdict = Verdict::time_limit;
    r.message = "CPU time limit exceeded";
  } else if (t.killed_for_output || r.stdout_truncated) {
    r.verdict = Verdict::output_limit;
    r.message = "stdout exceeded " + std::to_string(limits.output_bytes) + " bytes";
  } else if (t.denied_syscall >= 0) {
    // Reported by the user filter's notification, one-shot (the supervisor's listener) and in the
    // fork server (the server's listener) alike; the run was killed for it.
    r.verdict = Verdict::syscall_denied;
    r.message = denied_syscall_message(t.denied_arch, t.denied_syscall);
  } else if (t.signal == SIGSYS) {
    // The one seccomp kill left: a call through another architecture's ABI (its number would
    // name nothing of this one, and the kernel tells no one which it was).
    r.verdict = Verdict::syscall_denied;
    r.message = "killed by SIGSYS: a system call through another architecture's ABI (x32 numbers, int 0x80) is not allowed";
  } else if (t.signal == SIGXFSZ) {
    r.verdict = Verdict::output_limit;
    r.message = "file size limit exceeded";
  } else if ((t.exited && t.exit_code != 0) || t.signal != 0) {
    if (ends_with_memory_error(r.stderr_data)) {
      r.verdict = Verdict::memory_limit;
      r.message = "memory limit exceeded (allocation failed)";
    } else {
      r.verdict = Verdict::runtime_error;
      r.message = t.signal ? std::string("killed by signal ") + strsignal(t.signal)
                           : "exit code " + std::to_string(t.exit_code);
    }
  } else {
    r.verdict = Verdict::ok;
  }
  if (t.exec_denied && !r.message.empty()) r.message += "; an exec of another program was denied";
  else if (t.exec_denied) r.message = "an exec of another program was denied";
  return r;
}

}  // namespace distil::sandbox::detail
