#include "sandbox/fork_server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>

#include "sandbox/rlimits.h"

namespace distil::sandbox::detail {
namespace {

using Clock = std::chrono::steady_clock;

struct Reply {
  std::int32_t status;
  std::int32_t flags;
  double user_s;
  double system_s;
  std::int64_t max_rss_kb;
  std::int32_t denied_nr;     // kSyscallDenied: the call the child's filter reported
  std::uint32_t denied_arch;  // its AUDIT_ARCH_*
} __attribute__((packed));
static_assert(sizeof(Reply) == 40);

constexpr std::int32_t kTimedOut = 1;
constexpr std::int32_t kSetupFailed = 2;
constexpr std::int32_t kSyscallDenied = 4;
constexpr std::int32_t kExecDenied = 8;
constexpr std::int32_t kBatchEnded = 16;

// A warm server's 'B' request, as fork_server_native.c reads it.
struct BatchLimits {
  double wall_s;
  std::int64_t cpu_s, fsize_bytes, nofile, nproc;
} __attribute__((packed));
static_assert(sizeof(BatchLimits) == 40);

bool send_with_fds(int socket, char tag, const int (&fds)[3]) {
  char data = tag;
  iovec iov{&data, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(fds))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(cmsg), fds, sizeof(fds));
  ssize_t n;
  do n = sendmsg(socket, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == 1;
}

}  // namespace

ForkServer::ForkServer(ChildProcess process, UniqueFd control, const Limits& limits,
                       std::unique_ptr<RunCgroup> cgroup)
    : process_(std::move(process)), control_(std::move(control)), limits_(limits), cgroup_(std::move(cgroup)) {
  // The server itself never writes to stdout; its stderr only carries a crash traceback.
  process_.stdin_w.reset();
  fcntl(process_.stderr_r.get(), F_SETFL, O_NONBLOCK);
  fcntl(process_.stdout_r.get(), F_SETFL, O_NONBLOCK);
}

ForkServer::~ForkServer() { shut_down(); }

void ForkServer::shut_down() {
  if (process_.pid <= 0) return;
  control_.reset();  // EOF makes the server exit on its own; the kill makes sure
  kill_tree(process_);
  while (waitpid(process_.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  process_.pid = -1;
  alive_ = false;
}

bool ForkServer::exited() const {
  if (process_.pid <= 0) return true;
  pollfd p{process_.pidfd.get(), POLLIN, 0};
  return poll(&p, 1, 0) != 0;
}

bool ForkServer::begin_batch(const Limits& limits, std::size_t cgroup_bytes, int cgroup_pids) {
  if (!alive_ || exited()) {
    shut_down();
    return false;
  }
  if (cgroup_ && !cgroup_->begin_run(cgroup_bytes, cgroup_pids).empty()) {
    shut_down();
    return false;
  }
  limits_ = limits;
  // The values a one-batch server gets on its command line (sandbox.cc: the CPU limit printed
  // with 3 decimals, rounded up to whole seconds for RLIMIT_CPU).
  const double cpu = limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0;
  BatchLimits b{wall_deadline_s(limits), std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(std::round(cpu * 1000) / 1000))),
                static_cast<std::int64_t>(limits.file_size_mb << 20), std::max(1, limits.max_open_files),
                std::max(1, limits.max_processes)};
  char message[1 + sizeof(b)];
  message[0] = 'B';
  std::memcpy(message + 1, &b, sizeof(b));
  if (send(control_.get(), message, sizeof(message), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(message))) {
    shut_down();
    return false;
  }
  return true;
}

bool ForkServer::end_batch(double timeout_s) {
  if (!alive_) return false;
  const char e = 'E';
  if (send(control_.get(), &e, 1, MSG_NOSIGNAL) != 1) {
    shut_down();
    return false;
  }
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left < 0) break;
    pollfd p{control_.get(), POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(left) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char buf[sizeof(Reply) + 4096];
    const ssize_t got = recv(control_.get(), buf, sizeof(buf), 0);
    if (got < static_cast<ssize_t>(sizeof(Reply))) break;
    Reply reply;
    std::memcpy(&reply, buf, sizeof(reply));
    // Only the acknowledgement can come now: every input of the batch was answered.
    if (reply.flags == kBatchEnded) return true;
    break;
  }
  shut_down();
  return false;
}

std::string ForkServer::server_stderr() {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(process_.stderr_r.get(), buf, sizeof(buf))) > 0 && text.size() < 16384)
    text.append(buf, static_cast<std::size_t>(n));
  return text;
}

RunResult ForkServer::run(const std::string& stdin_data) {
  auto server_failure = [this](const std::string& why) {
    std::string detail = server_stderr();
    shut_down();
    RunResult r;
    r.verdict = Verdict::sandbox_error;
    r.message = "fork server: " + why + (detail.empty() ? "" : ": " + detail);
    return r;
  };
  if (!alive_) return server_failure("not running");

  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return server_failure(std::string("pipe2: ") + std::strerror(errno));
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return server_failure(std::string("pipe2: ") + std::strerror(errno));
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    for (int fd : {in[0], in[1], out[0], out[1]}) close(fd);
    return server_failure(std::string("pipe2: ") + std::strerror(errno));
  }
  UniqueFd child_in(in[0]), child_out(out[1]), child_err(err[1]);
  StdioPump pump(UniqueFd(in[1]), stdin_data, UniqueFd(out[0]), UniqueFd(err[0]), limits_.output_bytes,
                 limits_.stderr_bytes);

  const long oom_kills_before = cgroup_ ? cgroup_->oom_kills() : -1;
  // The server is the namespace's init: what it reaps from now on, and every other process of
  // its session, is this run's (its own time is not).
  const CpuMeter meter(process_.pid, false, cgroup_.get());
  const auto started = Clock::now();
  CpuSchedule schedule(started, limits_.cpu_time_s);
  if (!send_with_fds(control_.get(), 'R', {child_in.get(), child_out.get(), child_err.get()}))
    return server_failure(std::string("sending the request: ") + std::strerror(errno));
  child_in.reset();
  child_out.reset();
  child_err.reset();

  // The server enforces the wall deadline itself; this is the backstop if it stops answering.
  const auto backstop = started + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(wall_deadline_s(limits_) + 2.0));
  Termination t;
  bool replied = false;
  bool kill_sent = false;
  Clock::time_point reply_seen;
  std::string error_text;
  std::vector<pollfd> fds;
  for (;;) {
    const auto now = Clock::now();
    if (!replied && now >= backstop) return server_failure("no answer before the deadline");
    if (!replied && pump.stdout_over_cap() && !kill_sent) {
      const char k = 'K';
      if (send(control_.get(), &k, 1, MSG_NOSIGNAL) != 1) return server_failure("sending kill");
      kill_sent = true;
      t.killed_for_output = true;
    }
    if (!replied && !kill_sent && schedule.due(now)) {
      schedule.advance(now);
      t.sampled_cpu_s = std::max(t.sampled_cpu_s, meter.sample());
      if (t.sampled_cpu_s > limits_.cpu_time_s) {
        const char k = 'K';
        if (send(control_.get(), &k, 1, MSG_NOSIGNAL) != 1) return server_failure("sending kill");
        kill_sent = true;
        t.killed_for_cpu = true;
      }
    }
    if (replied && (!pump.outputs_open() || now - reply_seen > std::chrono::milliseconds(200))) break;
    fds.clear();
    fds.push_back({control_.get(), static_cast<short>(replied ? 0 : POLLIN), 0});
    fds.push_back({process_.pidfd.get(), POLLIN, 0});
    const std::size_t pump_first = fds.size();
    pump.add_to(fds);
    const auto until = replied ? reply_seen + std::chrono::milliseconds(200)
                       : kill_sent ? backstop
                                   : std::min(backstop, schedule.next());
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count() + 1;
    if (poll(fds.data(), fds.size(), static_cast<int>(std::clamp<long long>(ms, 0, 1000))) < 0) {
      if (errno == EINTR) continue;
      return server_failure(std::string("poll: ") + std::strerror(errno));
    }
    pump.handle(fds, pump_first);
    if (!replied && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[sizeof(Reply) + 4096];
      const ssize_t n = recv(control_.get(), buf, sizeof(buf), 0);
      if (n < static_cast<ssize_t>(sizeof(Reply))) return server_failure("malformed or missing reply");
      Reply reply;
      std::memcpy(&reply, buf, sizeof(reply));
      error_text.assign(buf + sizeof(Reply), static_cast<std::size_t>(n) - sizeof(Reply));
      replied = true;
      reply_seen = Clock::now();
      t.wall_time_s = std::chrono::duration<double>(reply_seen - started).count();
      t.cpu_time_s = reply.user_s + reply.system_s;
      t.peak_memory_kb = static_cast<std::size_t>(std::max<std::int64_t>(0, reply.max_rss_kb));
      t.killed_for_time = (reply.flags & kTimedOut) != 0;
      // What one-shot runs learn from the supervisor's own listener.
      t.exec_denied = (reply.flags & kExecDenied) != 0;
      if (reply.flags & kSyscallDenied) {
        t.denied_syscall = reply.denied_nr;
        t.denied_arch = reply.denied_arch;
      }
      if (reply.flags & kSetupFailed) {
        t.setup_failed = true;
        t.setup_message = "sandbox setup of the fork-server child failed: " + error_text;
      }
      if (WIFEXITED(reply.status)) {
        t.exited = true;
        t.exit_code = WEXITSTATUS(reply.status);
      } else if (WIFSIGNALED(reply.status)) {
        t.signal = WTERMSIG(reply.status);
      }
    }
    if (!replied && (fds[1].revents & POLLIN)) return server_failure("the server exited");
  }
  pump.close_all();
  if (cgroup_) t.memory_exceeded = cgroup_->oom_kills() > oom_kills_before;
  return make_result(t, pump, limits_);
}

}  // namespace distil::sandbox::detail
