// Sandbox: probes the host once, then runs programs one-shot (clone + exec per run) or, for
// batches of Python inputs, through a fork server (fork_server.h).
#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <thread>
#include <cstdio>
#include <optional>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "sandbox/cgroup.h"
#include "sandbox/fork_server.h"
#include "sandbox/fork_server_boot.h"
#include "sandbox/namespaces.h"
#include "sandbox/rlimits.h"
#include "sandbox/root_fs.h"
#include "sandbox/seccomp_policy.h"
#include "sandbox/supervisor.h"

namespace distil::sandbox {

using namespace detail;

namespace {

constexpr const char* kProgramPath = "/box/main.py";
constexpr const char* kFilterPath = "/box/filter.bpf";
// The sandbox's native helper (fork_server_native.c): the fork server's loop, and, preloaded into
// every user program (one-shot and the fork server alike), the constructor that lets the main
// thread's stack grow to kMainStackBytes once glibc has sized thread stacks from the soft limit.
constexpr const char* kNativePath = "/box/native.so";
constexpr const char* kSetupPath = "/box/setup.py";
// One-shot runs of a program with a setup: run the setup, then the program, in one __main__, as
// the fork server's children do. argv: setup_path program_path [args...].
constexpr const char* kPreludePath = "/box/prelude.py";
// One-shot runs of a program with a setup or a prelude: run the prelude (into its own module,
// the global __prelude__), the setup, then the program, in one __main__, as the fork server's
// children do. argv: prelude_path setup_path program_path [args...] ("-": none).
constexpr const char* kOneShotSetupBoot = R"PY(
import sys, types, builtins
prelude_path, setup_path, path = sys.argv[1], sys.argv[2], sys.argv[3]
sys.argv = sys.argv[3:]
sys.path[0] = path.rsplit("/", 1)[0]
main = types.ModuleType("__main__")
main.__file__ = path
main.__builtins__ = builtins
sys.modules["__main__"] = main
def report(e):
    # Drop this boot's frame: the traceback starts at the setup or the program, as one-shot.
    tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
    e.__traceback__ = tb
    sys.excepthook(type(e), e, tb)
    sys.exit(1)
if prelude_path != "-":
    prelude = types.ModuleType("__main__")
    prelude.__builtins__ = builtins
    main.__prelude__ = prelude
    try:
        with open(prelude_path, "rb") as f:
            exec(compile(f.read(), prelude_path, "exec"), prelude.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        report(e)
if setup_path != "-":
    try:
        with open(setup_path, "rb") as f:
            exec(compile(f.read(), setup_path, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        report(e)
with open(path, "rb") as f:
    source = f.read()
try:
    code = compile(source, path, "exec")
except BaseException as e:
    e.__traceback__ = None
    sys.excepthook(type(e), e, None)
    sys.exit(1)
del f, source
try:
    exec(code, main.__dict__)
except SystemExit:
    raise
except BaseException as e:
    report(e)
)PY";
constexpr const char* kCxxSourcePath = "/box/main.cpp";
constexpr const char* kCxxBinaryPath = "/box/main";
constexpr const char* kScratchBase = "/var/tmp";

// A host directory removed (without following links) when it goes out of scope.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& base) {
    std::string pattern = base + "/distil-sandbox-XXXXXX";
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp in " + base + ": " + std::strerror(errno));
    path_ = pattern;
  }
  ~ScratchDir() {
    // A sandboxed program that wrote here (Program::files / fetch_files) may have left
    // directories without search or write permission: opened up first (top down, before nftw
    // descends into each), so that the removal below reaches everything.
    nftw(path_.c_str(), [](const char* p, const struct stat*, int type, struct FTW*) {
      if (type == FTW_D || type == FTW_DNR) chmod(p, 0700);
      return 0;
    }, 16, FTW_PHYS | FTW_MOUNT);
    nftw(path_.c_str(), [](const char* p, const struct stat*, int type, struct FTW*) {
      if (type == FTW_DP) rmdir(p);
      else unlink(p);
      return 0;
    }, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The components of a path that work_path_problem() accepted, without "." and empty ones.
std::vector<std::string> work_path_components(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const auto slash = path.find('/', start);
    const std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty() && part != ".") parts.push_back(part);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return parts;
}

// Writes Program::files under `dir`, a directory only this process has written to so far. Every
// step is relative to a descriptor and refuses links (O_NOFOLLOW), so nothing lands outside it.
// Throws std::runtime_error naming the file.
void write_work_files(const std::string& dir, const std::vector<WorkFile>& files) {
  for (const auto& f : files) {
    const auto parts = work_path_components(f.path);
    auto fail = [&](const std::string& what) {
      throw std::runtime_error("program.files: cannot write '" + f.path + "': " + what + ": " + std::strerror(errno));
    };
    UniqueFd at(open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    if (!at.valid()) fail("opening the working directory");
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      if (mkdirat(at.get(), parts[i].c_str(), 0777) != 0 && errno != EEXIST) fail("creating directory " + parts[i]);
      fchmodat(at.get(), parts[i].c_str(), 0777, 0);  // past the umask: the program may add files there
      UniqueFd next(openat(at.get(), parts[i].c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!next.valid()) fail("opening directory " + parts[i]);
      at = std::move(next);
    }
    UniqueFd out(openat(at.get(), parts.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666));
    if (!out.valid()) fail("creating the file");
    std::size_t done = 0;
    while (done < f.content.size()) {
      const ssize_t n = write(out.get(), f.content.data() + done, f.content.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("writing");
      done += static_cast<std::size_t>(n);
    }
    if (fchmod(out.get(), 0666) != 0) fail("chmod");
  }
}

// Reads Program::fetch_files from `dir` after the run. The program controlled everything in
// there, so no link is followed (a link to /etc/shadow must not be read by this process), only
// regular files are read (a FIFO would block), opened non-blocking, and reading stops at
// `max_bytes` in all.
std::vector<WorkFile> fetch_work_files(const std::string& dir, const std::vector<std::string>& paths,
                                       std::size_t max_bytes) {
  std::vector<WorkFile> found;
  std::size_t total = 0;
  for (const auto& path : paths) {
    const auto parts = work_path_components(path);
    UniqueFd at(open(dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
    for (std::size_t i = 0; at.valid() && i + 1 < parts.size(); ++i)
      at.reset(openat(at.get(), parts[i].c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!at.valid()) continue;
    UniqueFd in(openat(at.get(), parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    struct stat st {};
    if (!in.valid() || fstat(in.get(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (total + static_cast<std::size_t>(st.st_size) > max_bytes) continue;
    std::string content;
    char buf[65536];
    bool ok = true;
    for (;;) {
      const ssize_t n = read(in.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ok = false;
      if (n <= 0) break;
      content.append(buf, static_cast<std::size_t>(n));
      if (total + content.size() > max_bytes) ok = false;
      if (!ok) break;
    }
    if (!ok) continue;
    total += content.size();
    found.push_back({path, std::move(content)});
  }
  return found;
}

std::string dirname_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

bool under_usr(const std::string& path) { return path.rfind("/usr/", 0) == 0; }

std::vector<std::string> sandbox_environment(bool user_program) {
  // PYTHONHASHSEED is fixed so a fork-server child and a one-shot run iterate sets identically.
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "TMPDIR=/tmp", "LANG=C.UTF-8",
                                  "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1"};
  if (user_program) {
    // One malloc arena: glibc reserves 64 MiB of address space for each further one (one per
    // thread, up to 8 per CPU), which counts against RLIMIT_AS as the thread stacks do.
    env.push_back("MALLOC_ARENA_MAX=1");
    // The stack helper (kNativePath), loaded before the program's own code.
    env.push_back(std::string("LD_PRELOAD=") + kNativePath);
  }
  return env;
}

// Fields 48-51 of /proc/self/stat: where the kernel finds this process's argument and
// environment strings (what /proc/<pid>/cmdline and environ read). Left 0 when unreadable.
void read_own_strings(std::uintptr_t& arg_start, std::uintptr_t& arg_end, std::uintptr_t& env_start,
                      std::uintptr_t& env_end) {
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream fields(text.substr(close + 1));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string x; fields >> x;) f.push_back(x);
  if (f.size() < 49) return;
  try {
    const std::uintptr_t a = std::stoull(f[45]), b = std::stoull(f[46]), c = std::stoull(f[47]), d = std::stoull(f[48]);
    if (a == 0 || b < a || c == 0 || d < c) return;
    arg_start = a;
    arg_end = b;
    env_start = c;
    env_end = d;
  } catch (const std::exception&) {
  }
}

// Keeps `target` parked sandbox processes ready (see ParkedChild), made by a background thread;
// runs take them. The thread is the parent of every process it clones (their parent-death
// signal follows it), so it lives as long as the Sandbox.
class ParkedPool {
 public:
  using Maker = std::function<std::unique_ptr<ParkedChild>(std::string& error)>;
  ParkedPool(int target, Maker maker)
      : target_(target), low_water_(std::max(0, target - 2)), maker_(std::move(maker)) {
    thread_ = std::thread([this] { loop(); });
  }
  ~ParkedPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    ready_cv_.notify_all();
    thread_.join();  // the parked processes are killed and reaped with `ready_`
  }
  // A ready process, or null (the caller clones its own). With none ready but one being made,
  // one caller waits for it a little: it is through part of its cgroup move already, a fresh
  // clone would start its own from the beginning. Call refill() once the taken one is released:
  // cloning copies the page tables of this whole process, which stalls its other threads' page
  // faults meanwhile, the caller's included.
  std::unique_ptr<ParkedChild> take() {
    std::unique_lock lock(mutex_);
    if (ready_.empty() && making_ && !waiting_) {
      waiting_ = true;
      ready_cv_.wait_for(lock, std::chrono::milliseconds(50),
                         [this] { return !ready_.empty() || !making_ || stopping_; });
      waiting_ = false;
    }
    if (ready_.empty()) return nullptr;
    auto parked = std::move(ready_.front());
    ready_.pop_front();
    return parked;
  }
  void refill() { wake_.notify_all(); }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    int failures = 0;
    // Refills come in bursts, from `low_water_` up to `target_`: where the supervisor moves the
    // process (cgroup v2), a move right after another (within one RCU grace period) does not
    // wait for a grace period of its own.
    bool burst = true;
    for (;;) {
      wake_.wait(lock, [&] {
        const int ready = static_cast<int>(ready_.size());
        return stopping_ || ready <= low_water_ || (burst && ready < target_);
      });
      if (stopping_) break;
      burst = true;
      making_ = true;
      lock.unlock();
      std::string error;
      auto parked = maker_(error);
      lock.lock();
      making_ = false;
      if (parked) {
        failures = 0;
        ready_.push_back(std::move(parked));
        if (static_cast<int>(ready_.size()) >= target_) burst = false;
      } else {
        // Runs clone their own meanwhile; retry later, then give up.
        // (The thread stays until the Sandbox goes: processes it cloned die with it.)
        if (++failures >= 10) wake_.wait(lock, [this] { return stopping_; });
        else wake_.wait_for(lock, std::chrono::milliseconds(100 * failures), [this] { return stopping_; });
      }
      ready_cv_.notify_all();
    }
    ready_.clear();
  }
  const int target_, low_water_;
  Maker maker_;
  std::mutex mutex_;
  std::condition_variable wake_, ready_cv_;
  std::deque<std::unique_ptr<ParkedChild>> ready_;
  bool stopping_ = false, making_ = false, waiting_ = false;
  std::thread thread_;
};

// A seccomp program compiled on first use: libseccomp takes about 0.6 ms per program, and a
// process that makes one Python run (distil-env run) needs one of the three.
class LazyFilter {
 public:
  LazyFilter(SeccompPolicy policy, ExecRule rule, DeniedAction denied = DeniedAction::kill)
      : policy_(policy), rule_(rule), denied_(denied) {}
  const SeccompProgram& get() const {
    std::call_once(once_, [this] { program_ = build_seccomp_program(policy_, rule_, denied_); });  // retried if it throws
    return program_;
  }

 private:
  const SeccompPolicy policy_;
  const ExecRule rule_;
  const DeniedAction denied_;
  mutable std::once_flag once_;
  mutable SeccompProgram program_;
};

// Writes `content` as `dir`/`name` with `mode`, replacing what was there in one rename, so a
// reader sees the old file or the new one, never a part. Throws std::runtime_error.
void write_file_atomically(const std::string& dir, const std::string& name, const std::string& content, mode_t mode) {
  const std::string path = dir + "/" + name, staged = dir + "/." + name + ".new";
  const int fd = open(staged.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("creating " + staged + ": " + std::strerror(errno));
  std::size_t done = 0;
  bool ok = true;
  while (ok && done < content.size()) {
    const ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ok = false;
    else done += static_cast<std::size_t>(n);
  }
  const int saved = errno;
  ok = ok && fchmod(fd, mode) == 0;
  if (close(fd) != 0) ok = false;
  if (!ok || rename(staged.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno ? errno : saved);
    unlink(staged.c_str());
    throw std::runtime_error("writing " + path + ": " + why);
  }
}

using SteadyClock = std::chrono::steady_clock;

// A fork server kept between batches (Config::warm_fork_servers): the interpreter imported the
// common modules and waits; each batch's program is written into `box` (bound read-only at the
// server's /box) before the batch begins, and only the server's children ever read it.
struct WarmServer {
  std::unique_ptr<ScratchDir> box;  // declared first: removed after the server is gone
  std::unique_ptr<ForkServer> server;
  std::size_t memory_mb = 0, file_size_mb = 0;  // fixed for its life: its RLIMIT_AS, its /tmp's size
  int max_processes = 0, max_open_files = 0;    // its own rlimits, which a child may only lower
  std::string prelude;  // Program::prelude it ran at its start
  unsigned long id = 0;
  unsigned batches = 0;  // served so far
  SteadyClock::time_point idle_since;
  bool fits(const Limits& l, const std::string& p) const {
    return p == prelude && l.memory_mb == memory_mb && l.file_size_mb == file_size_mb && l.max_processes <= max_processes &&
           l.max_open_files <= max_open_files;
  }
};

// The warm fork servers not in use, and the thread that is the parent of every warm server. A
// sandbox process gets SIGKILL when the *thread* that cloned it exits (the parent-death signal
// follows the thread), and a warm server must outlive the batch, and the caller's thread, it was
// started for; this thread lives as long as the Sandbox. It also retires servers left unused
// for `idle_s`. A server is in the pool or checked out by exactly one batch, never both.
class WarmPool {
 public:
  WarmPool(std::size_t capacity, double idle_s) : capacity_(capacity), idle_s_(idle_s) {
    thread_ = std::thread([this] { loop(); });
  }
  ~WarmPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    idle_.clear();  // each ForkServer kills and reaps its server (a child of this process)
  }
  // The most recently used idle server that can run a batch with `limits` and `prelude`, or null.
  std::unique_ptr<WarmServer> take(const Limits& limits, const std::string& prelude) {
    std::vector<std::unique_ptr<WarmServer>> dead;
    std::unique_ptr<WarmServer> found;
    {
      std::lock_guard lock(mutex_);
      for (auto it = idle_.end(); it != idle_.begin();) {
        --it;
        if ((*it)->server->exited()) {
          dead.push_back(std::move(*it));
          it = idle_.erase(it);
          continue;
        }
        if ((*it)->fits(limits, prelude)) {
          found = std::move(*it);
          idle_.erase(it);
          break;
        }
      }
    }
    return found;  // `dead` is destroyed outside the lock
  }
  void give_back(std::unique_ptr<WarmServer> server) {
    server->idle_since = SteadyClock::now();
    std::unique_ptr<WarmServer> evicted;
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(server));
      if (idle_.size() > capacity_) {
        evicted = std::move(idle_.front());  // the least recently used
        idle_.pop_front();
      }
    }
    wake_.notify_all();
  }
  // Runs `f` on the pool's thread (so that the processes it clones have that thread as their
  // parent) and returns its result, or rethrows what it threw.
  template <class F>
  auto on_thread(F f) -> decltype(f()) {
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto result = task.get_future();
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back([&task] { task(); });
    }
    wake_.notify_all();
    return result.get();
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (!tasks_.empty()) {
        auto task = std::move(tasks_.front());
        tasks_.pop_front();
        lock.unlock();
        task();
        lock.lock();
        continue;
      }
      const auto now = SteadyClock::now();
      const auto idle_for = std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(idle_s_));
      std::vector<std::unique_ptr<WarmServer>> expired;
      std::optional<SteadyClock::time_point> next;
      for (auto it = idle_.begin(); it != idle_.end();) {
        if (now - (*it)->idle_since >= idle_for) {
          expired.push_back(std::move(*it));
          it = idle_.erase(it);
        } else {
          const auto due = (*it)->idle_since + idle_for;
          if (!next || due < *next) next = due;
          ++it;
        }
      }
      if (!expired.empty()) {
        lock.unlock();
        expired.clear();
        lock.lock();
        continue;
      }
      if (next) wake_.wait_until(lock, *next);
      else wake_.wait(lock);
    }
  }
  const std::size_t capacity_;
  const double idle_s_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<WarmServer>> idle_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

struct Sandbox::Impl {
  Config config;
  IsolationReport report;
  bool namespaces = false;
  bool privileged = false;  // euid 0 on the host: may map arbitrary outside ids
  // User code: exec and every denied call notify the listener (the supervisor one-shot, the
  // fork server for its children), which allows the first exec, refuses later ones (EPERM) and
  // kills the run for a denied call, naming it.
  LazyFilter user_filter{SeccompPolicy::user_program, ExecRule::notify, DeniedAction::notify};
  LazyFilter compiler_filter{SeccompPolicy::supervisor, ExecRule::allow};                     // g++ and its subprocesses
  LazyFilter server_filter{SeccompPolicy::supervisor, ExecRule::notify, DeniedAction::notify};  // the fork server before its children add user_filter
  // Where this process's argument and environment strings are (/proc/self/stat): the init stub,
  // a copy of this process, blanks them (child.h). 0: unknown, nothing to blank.
  std::uintptr_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  std::atomic<unsigned> run_counter{0};
  std::unique_ptr<CgroupManager> cgroups;
  Reaper reaper;  // declared after `cgroups`: destroyed first, it gives cgroups back
  std::once_flag pool_once;
  std::atomic<bool> started_once{false};  // the constructor's probe run is over
  std::unique_ptr<ParkedPool> pool;  // after `reaper`: its thread is the parent of runs' processes
  ParkedPool* parked_pool();
  std::atomic<unsigned long> fork_server_serial{0};
  std::atomic<int> warm_start_failures{0};  // in a row; warm servers are not tried after 3
  std::unique_ptr<WarmPool> warm;  // last: destroyed first, while cgroups and the reaper exist
  std::mutex notes_mutex;
  std::string last_fork_server_failure;
  void note_fork_server_failure(const std::string& why) {
    std::lock_guard lock(notes_mutex);
    last_fork_server_failure = why;
  }

  unsigned next_outside_root() {
    // Two ids per run (inside 0 and inside 1000), 32768 runs before an id pair is reused.
    return config.outside_id_base + 2 * (run_counter.fetch_add(1) % 32768);
  }

  std::vector<std::string> readonly_paths() const {
    std::vector<std::string> paths = config.readonly_paths;
    for (const std::string& exe : {config.python_path, config.cxx_path}) {
      const std::string dir = dirname_of(exe);
      if (!under_usr(exe) && dir != "/bin" && dir != "/sbin") paths.push_back(dir);
    }
    return paths;
  }

  struct Launch {
    std::string executable;
    std::vector<std::string> argv;
    std::vector<RootLayout::File> files;
    const LazyFilter* filter = nullptr;
    bool exec_notify = false;
    Limits limits;
    std::string work_dir_host;  // bound at /tmp instead of a tmpfs (compile step)
    std::string box_dir_host;   // bound read-only at /box instead of `files` (warm fork server)
    int keep_fd = -1;           // becomes fd 3 in the child
    // The fork server keeps the namespace's root (for each child's private /tmp); its children
    // drop to the sandbox uid before user code runs.
    bool stay_namespace_root = false;
    // A user program (or the fork server that runs them): /box/native.so preloaded, the stack
    // limits, one malloc arena (rlimits.h, sandbox_environment).
    bool user_program = true;
  };

  // Everything a spawn points into, kept at a fixed address until the child has exec'd.
  struct Prepared {
    SpawnOptions options;
    std::optional<sock_fprog> fprog;
    std::optional<RootLayout> layout;
    std::optional<ScratchDir> scratch;
    std::string work_dir;
    std::vector<std::string> step_targets;
    std::unique_ptr<ArgvBuilder> argv, env;
    std::string executable;
  };
  std::unique_ptr<Prepared> prepare(const Launch& l);
  std::unique_ptr<RunCgroup> make_cgroup(const Limits& limits, std::size_t extra_bytes, int extra_pids);
  std::vector<RunResult> run_cpp_batch(const Program& program, const std::vector<std::string>& stdin_data,
                                       const Limits& limits, bool stop_at_first_failure);
  // Every run goes through launch(). The first one (the constructor's probe, or with
  // !config.probe_at_start the first real run) is launch_degrading(): a sandbox_error there turns
  // layers off (noted in the report) and the run is made again; check_minimum() then throws if
  // config.minimum is no longer met.
  RunResult launch(const Launch& l, const std::string& stdin_data);
  // launch(), in a private working directory holding program.files when the program has files or
  // fetch_files (then read back into the result); otherwise just launch().
  RunResult launch_in_work_dir(const Launch& l, const Program& program, const std::string& stdin_data);
  RunResult launch_once(const Launch& l, const std::string& stdin_data);
  RunResult launch_degrading(const Launch& l, const std::string& stdin_data);
  void check_minimum() const;
  std::atomic<bool> probed{false};
  std::mutex probe_mutex;
  // The control socket pair of a fork server (ours, and theirs: fd 3 in the server) and the
  // start of its Launch (the interpreter, -S); false with `error` when the pair cannot be made.
  bool fork_server_launch(Launch& l, UniqueFd& ours, UniqueFd& theirs, std::string& error) const;
  std::unique_ptr<ForkServer> start_fork_server(const Program& program, const Limits& limits, std::string& error);
  std::unique_ptr<ForkServer> boot_fork_server(Launch& l, UniqueFd ours, UniqueFd theirs, const Limits& limits,
                                               bool on_warm_thread, std::string& error);
  std::unique_ptr<WarmServer> start_warm_server(const Limits& limits, const std::string& prelude, std::string& error);
  bool begin_warm_batch(WarmServer& server, const Program& program, const Limits& limits, std::string& error);
  bool fork_server_usable() const { return config.use_fork_server && namespaces && privileged && report.seccomp; }
};

Sandbox::Sandbox(Config config) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.config = std::move(config);
  IsolationReport& r = d.report;
  // Writing to a program that closed its stdin must give EPIPE, not kill the server.
  signal(SIGPIPE, SIG_IGN);
  d.privileged = geteuid() == 0;
  if (d.config.outside_id_base == 0)
    d.config.outside_id_base = 1'600'000u + 65536u * (static_cast<unsigned>(getpid()) % 4096u);
  if (d.config.outside_id_base > 0xFFFFFFFFu - 65536u)
    throw std::invalid_argument("config.outside_id_base: must leave room for 65536 ids below 2^32");
  if (d.config.prespawned < 0 || d.config.prespawned > 64)
    throw std::invalid_argument("config.prespawned: must be between 0 and 64, got " + std::to_string(d.config.prespawned));
  if (d.config.warm_fork_servers < 0 || d.config.warm_fork_servers > 64)
    throw std::invalid_argument("config.warm_fork_servers: must be between 0 and 64, got " +
                                std::to_string(d.config.warm_fork_servers));
  if (d.config.warm_fork_server_batches < 1 || d.config.warm_fork_server_batches > 1'000'000)
    throw std::invalid_argument("config.warm_fork_server_batches: must be between 1 and 1000000, got " +
                                std::to_string(d.config.warm_fork_server_batches));
  if (!(d.config.warm_fork_server_idle_s > 0))
    throw std::invalid_argument("config.warm_fork_server_idle_s: must be positive");

  if (d.config.use_namespaces) {
    // Without the start-up probe the first run's clone is the test (launch_degrading).
    const std::string why = d.config.probe_at_start ? probe_namespaces() : std::string();
    if (why.empty()) {
      d.namespaces = true;
    } else {
      r.notes.push_back("namespaces unavailable: " + why);
    }
  } else {
    r.notes.push_back("namespaces disabled by configuration");
  }
  r.user_namespace = r.pid_namespace = r.mount_namespace = r.network_namespace = r.ipc_namespace =
      r.uts_namespace = r.readonly_root = d.namespaces;

  try {
    d.user_filter.get();  // settles whether seccomp works; the other two are built on first use
    r.seccomp = true;
    if (!seccomp_kill_process_available()) {
      // Loud: a denied call (or another ABI's) from a second thread then ends only that thread,
      // and a program waiting for it runs into the wall deadline instead of syscall_denied.
      const std::string why =
          "seccomp: this kernel lacks SECCOMP_RET_KILL_PROCESS (Linux 4.14+); denied system calls kill only the "
          "calling thread";
      r.notes.push_back(why);
      std::fprintf(stderr, "distil sandbox: warning: %s\n", why.c_str());
    }
  } catch (const std::exception& e) {
    r.notes.push_back(std::string("seccomp unavailable: ") + e.what());
  }
  r.rlimits = true;
  r.no_new_privs = true;
  read_own_strings(d.arg_start, d.arg_end, d.env_start, d.env_end);
  if (d.config.use_cgroups) {
    std::string why;
    d.cgroups = CgroupManager::detect(why);
    r.cgroup = d.cgroups != nullptr;
    if (!r.cgroup) r.notes.push_back("cgroup limits off (" + why + "): memory is bounded per process by RLIMIT_AS, processes by RLIMIT_NPROC");
    else r.notes.push_back("cgroup: " + d.cgroups->description());
  } else {
    r.notes.push_back("cgroups disabled by configuration");
  }

  if (d.config.python_path.empty() || d.config.python_path[0] != '/')
    throw std::invalid_argument("config.python_path: must be an absolute path, got '" + d.config.python_path + "'");
  if (d.config.cxx_path.empty() || d.config.cxx_path[0] != '/')
    throw std::invalid_argument("config.cxx_path: must be an absolute path, got '" + d.config.cxx_path + "'");

  // The clone probe says the kernel allows the namespaces; a container can still refuse a
  // mount the root needs. One real run through the whole path settles it, and on failure the
  // sandbox degrades (and says why) instead of failing every run. Without `probe_at_start` the
  // first real run is that probe (launch()).
  d.check_minimum();
  if (d.config.probe_at_start) {
    if (d.namespaces && access(d.config.python_path.c_str(), X_OK) == 0) {
      Impl::Launch probe;
      probe.executable = d.config.python_path;
      probe.argv = {d.config.python_path, "-S", "-c", "pass"};
      probe.filter = &d.user_filter;
      probe.exec_notify = true;
      probe.limits.cpu_time_s = 10;
      probe.limits.wall_time_s = 30;
      d.launch_degrading(probe, "");
    }
    d.probed.store(true, std::memory_order_release);
  }
  if (d.config.warm_fork_servers > 0 && d.fork_server_usable())
    d.warm = std::make_unique<WarmPool>(static_cast<std::size_t>(d.config.warm_fork_servers),
                                        d.config.warm_fork_server_idle_s);
}

RunResult Sandbox::Impl::launch_degrading(const Launch& l, const std::string& stdin_data) {
  IsolationReport& r = report;
  RunResult result = launch_once(l, stdin_data);
  if (!namespaces) return result;
  if (result.verdict == Verdict::sandbox_error && cgroups && result.message.find("cgroup") != std::string::npos) {
    cgroups.reset();
    r.cgroup = false;
    r.notes.push_back("cgroup limits off: a probe run failed: " + result.message);
    result = launch_once(l, stdin_data);
  }
  if (result.verdict == Verdict::sandbox_error) {
    namespaces = false;
    r.user_namespace = r.pid_namespace = r.mount_namespace = r.network_namespace = r.ipc_namespace =
        r.uts_namespace = r.readonly_root = false;
    r.notes.push_back("namespaces off: a probe run failed: " + result.message);
    check_minimum();
    result = launch_once(l, stdin_data);
  }
  check_minimum();
  return result;
}

void Sandbox::Impl::check_minimum() const {
  const IsolationReport& r = report;
  const bool basic_ok = r.seccomp && r.rlimits;
  const bool ns_ok = basic_ok && namespaces;
  const bool full_ok = ns_ok && r.cgroup;
  std::string missing;
  switch (config.minimum) {
    case MinimumIsolation::basic: if (!basic_ok) missing = "basic (seccomp + rlimits)"; break;
    case MinimumIsolation::namespaces: if (!ns_ok) missing = "namespaces"; break;
    case MinimumIsolation::full: if (!full_ok) missing = "full (namespaces + cgroup)"; break;
  }
  if (!missing.empty()) {
    std::string notes;
    for (const auto& n : r.notes) notes += "; " + n;
    throw std::runtime_error("sandbox: the configured minimum isolation '" + missing + "' is not available" + notes);
  }
}

RunResult Sandbox::Impl::launch(const Launch& l, const std::string& stdin_data) {
  if (!probed.load(std::memory_order_acquire)) {
    std::lock_guard lock(probe_mutex);
    if (!probed.load(std::memory_order_relaxed)) {
      RunResult result = launch_degrading(l, stdin_data);
      probed.store(true, std::memory_order_release);
      return result;
    }
  }
  return launch_once(l, stdin_data);
}

Sandbox::~Sandbox() = default;

void Sandbox::settle() { impl_->reaper.drain(); }

const IsolationReport& Sandbox::isolation() const { return impl_->report; }
const Config& Sandbox::config() const { return impl_->config; }

std::string Sandbox::fork_server_failure() const {
  std::lock_guard lock(impl_->notes_mutex);
  return impl_->last_fork_server_failure;
}

std::unique_ptr<Sandbox::Impl::Prepared> Sandbox::Impl::prepare(const Launch& l) {
  auto prepared = std::make_unique<Prepared>();
  Prepared& p = *prepared;
  SpawnOptions& options = p.options;
  options.namespaces = namespaces;
  options.privileged_maps = privileged;
  options.outside_root = next_outside_root();
  options.keep_fd = l.keep_fd;
  ChildPlan& plan = options.plan;
  plan.rlimits = plan_rlimits(l.limits);
  if (l.user_program) add_stack_limit(plan.rlimits);
  plan.no_new_privs = true;
  plan.arg_start = arg_start;
  plan.arg_end = arg_end;
  plan.env_start = env_start;
  plan.env_end = env_end;
  std::vector<RootLayout::File> files = l.files;
  // (A warm fork server's /box is a host directory holding its own copy.)
  if (l.user_program && l.box_dir_host.empty())
    files.push_back({kNativePath, std::string(reinterpret_cast<const char*>(kForkServerNative), kForkServerNativeSize), true});
  if (l.filter && report.seccomp) {
    p.fprog = l.filter->get().fprog();
    plan.seccomp = &*p.fprog;
    plan.seccomp_listener = l.exec_notify;
  }

  std::vector<std::string> argv = l.argv;
  p.executable = l.executable;
  if (namespaces) {
    p.layout.emplace(readonly_paths(), files, l.limits.file_size_mb, l.work_dir_host, l.box_dir_host);
    plan.root = &p.layout->plan();
    for (int i = 0; i < plan.root->step_count; ++i) p.step_targets.push_back(plan.root->steps[i].target);
    plan.hostname = "sandbox";
    plan.work_dir = "/tmp";
    plan.become_namespace_root = true;
    plan.change_ids = privileged && !l.stay_namespace_root;
    plan.drop_capabilities = !privileged && !l.stay_namespace_root;
    plan.uid = kSandboxUid;
    plan.gid = kSandboxGid;
    plan.init_stub = !l.stay_namespace_root;
    plan.cgroup_namespace = true;
    // The stub is one more process of the sandbox uid.
    if (plan.init_stub) {
      for (int i = 0; i < plan.rlimits.count; ++i)
        if (plan.rlimits.entries[i].resource == RLIMIT_NPROC) ++plan.rlimits.entries[i].value;
    }
  } else {
    // Without a mount namespace the program lives in a private host directory; paths under
    // /box in argv are rewritten to it.
    p.scratch.emplace(l.work_dir_host.empty() ? kScratchBase : l.work_dir_host);
    for (const auto& f : files) {
      const std::string host = p.scratch->path() + "/" + f.path.substr(5);
      std::ofstream out(host, std::ios::binary);
      out << f.content;
      if (!out) throw std::runtime_error("writing " + host);
      out.close();
      if (chmod(host.c_str(), f.executable ? 0555 : 0444) != 0)
        throw std::runtime_error("chmod " + host + ": " + std::strerror(errno));
    }
    auto rewrite = [&](std::string& s) {
      if (s.rfind("/box/", 0) == 0) s = p.scratch->path() + "/" + s.substr(5);
    };
    for (auto& a : argv) rewrite(a);
    rewrite(p.executable);
    p.work_dir = l.work_dir_host.empty() ? p.scratch->path() : l.work_dir_host;
    plan.work_dir = p.work_dir.c_str();
    if (privileged) {
      // Run as an otherwise unused host uid so kill/ptrace cannot reach anything else.
      plan.change_ids = true;
      plan.uid = options.outside_root + 1;
      plan.gid = options.outside_root + 1;
      if (chown(p.scratch->path().c_str(), plan.uid, plan.gid) != 0)
        throw std::runtime_error("chown " + p.scratch->path() + ": " + std::strerror(errno));
    }
  }
  std::vector<std::string> env = sandbox_environment(l.user_program);
  if (!namespaces)
    for (auto& e : env)
      if (e == std::string("LD_PRELOAD=") + kNativePath) e = "LD_PRELOAD=" + p.scratch->path() + "/" + (kNativePath + 5);
  p.argv = std::make_unique<ArgvBuilder>(argv);
  p.env = std::make_unique<ArgvBuilder>(env);
  plan.executable = p.executable.c_str();
  plan.argv = p.argv->get();
  plan.envp = p.env->get();
  return prepared;
}

namespace {

// The cgroup bounds the whole tree. It sits a quarter above the per-process RLIMIT_AS so a
// single process fails its allocation cleanly (MemoryError, bad_alloc) before the cgroup starts
// reclaiming, which near its limit slows everything inside to a crawl.
std::size_t cgroup_bytes(const Limits& limits, std::size_t extra_bytes) {
  return (limits.memory_mb << 20) + (limits.memory_mb << 18) + (32u << 20) + extra_bytes;
}

}  // namespace

std::unique_ptr<RunCgroup> Sandbox::Impl::make_cgroup(const Limits& limits, std::size_t extra_bytes, int extra_pids) {
  if (!cgroups) return nullptr;
  std::string error;
  auto cg = cgroups->create(cgroup_bytes(limits, extra_bytes), std::max(1, limits.max_processes) + extra_pids, error);
  if (!cg) throw std::runtime_error("creating the run's cgroup: " + error);
  return cg;
}

ParkedPool* Sandbox::Impl::parked_pool() {
  // Only where the cgroup move is there to hide, and after the constructor's probe settled
  // which layers are on.
  if (config.prespawned <= 0 || !namespaces || !cgroups) return nullptr;
  std::call_once(pool_once, [this] {
    try {
      // What every run's root has in common (the configured read-only paths, devices, /proc).
      auto generic = std::make_shared<RootLayout>(readonly_paths(), std::vector<RootLayout::File>{}, Limits{}.file_size_mb);
      pool = std::make_unique<ParkedPool>(config.prespawned, [this, generic](std::string& error) -> std::unique_ptr<ParkedChild> {
        auto cgroup = cgroups->create(cgroup_bytes(Limits{}, 0), std::max(1, Limits{}.max_processes) + 2, error);
        if (!cgroup) return nullptr;
        return spawn_parked(namespaces, next_outside_root(), privileged, std::move(cgroup), &generic->plan(), error);
      });
    } catch (const std::exception&) {
      pool.reset();  // no thread: every run clones its own
    }
  });
  return pool.get();
}

RunResult Sandbox::Impl::launch_in_work_dir(const Launch& l, const Program& program, const std::string& stdin_data) {
  if (program.files.empty() && program.fetch_files.empty()) return launch(l, stdin_data);
  std::optional<ScratchDir> work;
  try {
    work.emplace(kScratchBase);
    // The sandbox uid is not this process's: the program must be able to create files here.
    if (chmod(work->path().c_str(), 0777) != 0)
      throw std::runtime_error("chmod " + work->path() + ": " + std::strerror(errno));
    write_work_files(work->path(), program.files);
  } catch (const std::exception& e) {
    RunResult r;
    r.verdict = Verdict::sandbox_error;
    r.message = e.what();
    return r;
  }
  Launch in_work_dir = l;
  in_work_dir.work_dir_host = work->path();
  RunResult result = launch(in_work_dir, stdin_data);
  // launch() returns once every process of the run is dead: nothing writes here any more.
  result.files = fetch_work_files(work->path(), program.fetch_files, program.fetch_max_bytes);
  return result;
}

RunResult Sandbox::Impl::launch_once(const Launch& l, const std::string& stdin_data) {
  std::unique_ptr<Prepared> p;
  std::unique_ptr<RunCgroup> cgroup;
  ChildProcess child;
  try {
    p = prepare(l);
    bool started = false;
    ParkedPool* parked_pool = l.keep_fd < 0 && started_once.load(std::memory_order_relaxed) ? this->parked_pool() : nullptr;
    if (auto parked = parked_pool ? parked_pool->take() : nullptr) {
      // Already in its namespaces and cgroup: only the run's limits and plan are missing.
      if (parked->cgroup &&
          parked->cgroup->begin_run(cgroup_bytes(l.limits, 0), std::max(1, l.limits.max_processes) + 2).empty() &&
          release_parked(*parked, p->options.plan, child)) {
        cgroup = std::move(parked->cgroup);
        started = true;
      }
      parked.reset();
      parked_pool->refill();
    }
    if (!started) {
      cgroup = make_cgroup(l.limits, 0, 2);
      p->options.cgroup = cgroup.get();
      child = spawn_child(p->options);
    }
    started_once.store(true, std::memory_order_relaxed);
  } catch (const std::exception& e) {
    RunResult r;
    r.verdict = Verdict::sandbox_error;
    r.message = e.what();
    return r;
  }
  StdioPump pump(std::move(child.stdin_w), stdin_data, std::move(child.stdout_r), std::move(child.stderr_r),
                 l.limits.output_bytes, l.limits.stderr_bytes);
  Termination t = supervise(child, pump, wall_deadline_s(l.limits), &p->step_targets, l.limits.cpu_time_s, cgroup.get());
  if (cgroup) {
    t.memory_exceeded = cgroup->oom_kills() > 0;
    t.peak_memory_kb = std::max(t.peak_memory_kb, cgroup->peak_kb());
  }
  RunResult result = make_result(t, pump, l.limits);
  if (t.unreaped) reaper.adopt(std::move(child), std::move(cgroup));
  return result;
}

bool Sandbox::Impl::fork_server_launch(Launch& l, UniqueFd& ours, UniqueFd& theirs, std::string& error) const {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    error = std::string("socketpair: ") + std::strerror(errno);
    return false;
  }
  ours.reset(pair[0]);
  theirs.reset(pair[1]);
  l.executable = config.python_path;
  l.argv = {config.python_path};
  if (!config.python_site_packages) l.argv.push_back("-S");
  return true;
}

std::unique_ptr<ForkServer> Sandbox::Impl::start_fork_server(const Program& program, const Limits& limits,
                                                             std::string& error) {
  UniqueFd ours, theirs;
  Launch l;
  if (!fork_server_launch(l, ours, theirs, error)) return nullptr;
  const std::string fsize = std::to_string(limits.file_size_mb << 20);
  char cpu[32], wall[32];
  std::snprintf(cpu, sizeof(cpu), "%.3f", limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0);
  std::snprintf(wall, sizeof(wall), "%.3f", wall_deadline_s(limits));
  for (const std::string& a : {std::string("-c"), std::string(kForkServerBoot), std::string(kProgramPath),
                               std::string(kNativePath), std::string(cpu), std::string(wall), fsize,
                               std::to_string(std::max(1, limits.max_open_files)),
                               std::to_string(std::max(1, limits.max_processes)), std::string(kFilterPath),
                               std::string(program.setup.empty() ? "-" : kSetupPath),
                               std::string(program.prelude.empty() ? "-" : kPreludePath)})
    l.argv.push_back(a);
  l.argv.insert(l.argv.end(), program.args.begin(), program.args.end());
  const auto& bpf = user_filter.get().instructions;
  l.files = {{kProgramPath, program.source},
             {kSetupPath, program.setup},
             {kPreludePath, program.prelude},
             {kFilterPath, std::string(reinterpret_cast<const char*>(bpf.data()), bpf.size() * sizeof(sock_filter))}};
  l.filter = &server_filter;
  l.exec_notify = true;
  l.limits = limits;
  l.limits.cpu_time_s = 600;  // the server's own CPU; each child has the real limit
  l.limits.max_processes = std::max(16, limits.max_processes);  // children may only lower it
  return boot_fork_server(l, std::move(ours), std::move(theirs), limits, false, error);
}

std::unique_ptr<ForkServer> Sandbox::Impl::boot_fork_server(Launch& l, UniqueFd ours, UniqueFd theirs,
                                                            const Limits& limits, bool on_warm_thread,
                                                            std::string& error) {
  l.keep_fd = theirs.get();
  l.stay_namespace_root = true;
  try {
    auto p = prepare(l);
    // One cgroup for the batch: the server, plus one child at a time.
    auto cgroup = make_cgroup(limits, 64u << 20, 4);
    // On cgroup v1 the server moves itself into the batch's cgroup as its first step
    // (RunCgroup::self_move_fd). Elsewhere the supervisor moves it while it boots (interpreter
    // start, imports, setup); either way it forks no child before the 'G' sent below, once the
    // move is done, so every child starts in the cgroup.
    p->options.cgroup = cgroup && cgroup->self_move_fd() >= 0 ? cgroup.get() : nullptr;
    ChildProcess child = on_warm_thread ? warm->on_thread([&] { return spawn_child(p->options); })
                                        : spawn_child(p->options);
    theirs.reset();
    SetupMonitor monitor(child, &p->step_targets);
    const std::string why = await_exec(child, monitor, 10.0);
    auto abandon = [&child, &error](const std::string& reason) {
      kill_tree(child);
      waitpid(child.pid, nullptr, 0);
      error = reason;
    };
    if (!why.empty()) {
      abandon(why);
      return nullptr;
    }
    // Closing the listener makes every later exec attempt fail (ENOSYS).
    monitor.close_listener();
    if (cgroup && !p->options.cgroup) {
      if (const std::string e = cgroup->add(child.pid); !e.empty()) {
        abandon("moving the fork server into its cgroup: " + e);
        return nullptr;
      }
    }
    const char go = 'G';
    if (send(ours.get(), &go, 1, MSG_NOSIGNAL) != 1) {
      abandon(std::string("releasing the fork server: ") + std::strerror(errno));
      return nullptr;
    }
    return std::make_unique<ForkServer>(std::move(child), std::move(ours), limits, std::move(cgroup));
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}

std::unique_ptr<WarmServer> Sandbox::Impl::start_warm_server(const Limits& limits, const std::string& prelude,
                                                             std::string& error) {
  auto w = std::make_unique<WarmServer>();
  try {
    // The server's /box: a host directory only this supervisor writes (root's, read-only inside),
    // holding the server's own two files and, from each batch's start, that batch's program.
    w->box = std::make_unique<ScratchDir>(kScratchBase);
    if (chmod(w->box->path().c_str(), 0755) != 0)
      throw std::runtime_error("chmod " + w->box->path() + ": " + std::strerror(errno));
    const auto& bpf = user_filter.get().instructions;
    write_file_atomically(w->box->path(), "filter.bpf",
                          std::string(reinterpret_cast<const char*>(bpf.data()), bpf.size() * sizeof(sock_filter)), 0444);
    write_file_atomically(w->box->path(), kNativePath + 5,
                          std::string(reinterpret_cast<const char*>(kForkServerNative), kForkServerNativeSize), 0555);
    write_file_atomically(w->box->path(), "prelude.py", prelude, 0444);
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
  UniqueFd ours, theirs;
  Launch l;
  if (!fork_server_launch(l, ours, theirs, error)) return nullptr;
  for (const char* a : {"-c", kForkServerBoot, "--warm", kNativePath, kFilterPath, prelude.empty() ? "-" : kPreludePath})
    l.argv.push_back(a);
  w->prelude = prelude;
  l.box_dir_host = w->box->path();
  l.filter = &server_filter;
  l.exec_notify = true;
  l.limits = limits;
  l.limits.cpu_time_s = 600;  // the server's own CPU over its life; each child has its batch's
  // The server's own limits, which its children may only lower: room for any usual batch.
  l.limits.max_processes = std::max(64, limits.max_processes);
  l.limits.max_open_files = std::max(256, limits.max_open_files);
  w->memory_mb = limits.memory_mb;
  w->file_size_mb = limits.file_size_mb;
  w->max_processes = l.limits.max_processes;
  w->max_open_files = l.limits.max_open_files;
  w->server = boot_fork_server(l, std::move(ours), std::move(theirs), limits, true, error);
  if (!w->server) return nullptr;
  w->id = ++fork_server_serial;
  return w;
}

bool Sandbox::Impl::begin_warm_batch(WarmServer& w, const Program& program, const Limits& limits, std::string& error) {
  // Nothing of the previous batch runs any more (its end was acknowledged), and this batch's
  // children are forked only after the 'B' below: no child ever sees another batch's files.
  try {
    std::string batch = program.setup.empty() ? "0" : "1";
    for (const auto& a : program.args) batch += '\0' + a;
    write_file_atomically(w.box->path(), "main.py", program.source, 0444);
    write_file_atomically(w.box->path(), "setup.py", program.setup, 0444);
    write_file_atomically(w.box->path(), "batch", batch, 0444);
  } catch (const std::exception& e) {
    error = std::string("warm fork server: ") + e.what();
    return false;
  }
  if (!w.server->begin_batch(limits, cgroup_bytes(limits, 64u << 20), std::max(1, limits.max_processes) + 4)) {
    error = "warm fork server: it ended between batches";
    return false;
  }
  return true;
}

std::string work_path_problem(const std::string& path) {
  if (path.empty()) return "the path is empty";
  if (path.size() > 4096) return "the path is longer than 4096 bytes";
  if (path.find('\0') != std::string::npos) return "the path contains a NUL byte";
  if (path.front() == '/') return "the path is absolute; it must be relative to the working directory";
  const auto parts = work_path_components(path);
  if (parts.empty()) return "the path names the working directory itself, not a file in it";
  for (const auto& part : parts) {
    if (part == "..") return "the path has a '..' component; it must stay inside the working directory";
    if (part.size() > 255) return "a component of the path is longer than 255 bytes";
  }
  return {};
}

namespace {

// Checks what a caller (a task file, a request) controls; empty when fine.
std::string validate_request(const Program& program, const Limits& limits) {
  if (auto error = validate_limits(limits); !error.empty()) return error;
  if (program.source.size() > (64u << 20)) return "program.source: larger than 64 MiB";
  if (program.setup.size() > (64u << 20)) return "program.setup: larger than 64 MiB";
  if (!program.setup.empty() && program.language != Language::python) return "program.setup: only for Python programs";
  if (program.prelude.size() > (1u << 20)) return "program.prelude: larger than 1 MiB";
  if (!program.prelude.empty() && program.language != Language::python)
    return "program.prelude: only for Python programs";
  if (program.args.size() > 1024) return "program.args: more than 1024 arguments";
  if (program.files.size() > 1024) return "program.files: more than 1024 files";
  std::size_t file_bytes = 0;
  for (const auto& f : program.files) {
    if (auto why = work_path_problem(f.path); !why.empty()) return "program.files: '" + f.path + "': " + why;
    file_bytes += f.content.size();
  }
  if (file_bytes > (64u << 20)) return "program.files: more than 64 MiB in all";
  if (program.fetch_files.size() > 1024) return "program.fetch_files: more than 1024 paths";
  for (const auto& path : program.fetch_files)
    if (auto why = work_path_problem(path); !why.empty()) return "program.fetch_files: '" + path + "': " + why;
  for (const auto& a : program.args)
    if (a.find('\0') != std::string::npos) return "program.args: an argument contains a NUL byte";
  return {};
}

RunResult invalid_request(const std::string& why) {
  RunResult r;
  r.verdict = Verdict::sandbox_error;
  r.message = "invalid request: " + why;
  return r;
}

}  // namespace

std::vector<RunResult> Sandbox::Impl::run_cpp_batch(const Program& program, const std::vector<std::string>& stdin_data,
                                                    const Limits& limits, bool stop_at_first_failure) {
  std::vector<RunResult> results;
  // Compile once in a sandbox that may exec (cc1plus, as, ld), into a scratch directory bound
  // at /tmp, then run the binary like any other program.
  ScratchDir build(kScratchBase);
  if (chmod(build.path().c_str(), 0777) != 0)
    throw std::runtime_error("chmod " + build.path() + ": " + std::strerror(errno));
  Impl::Launch compile;
  compile.executable = config.cxx_path;
  compile.argv = {config.cxx_path, "-std=c++17", "-O2", "-pipe", "-o", "/tmp/main", kCxxSourcePath};
  compile.files = {{kCxxSourcePath, program.source}};
  compile.filter = &compiler_filter;
  compile.limits.cpu_time_s = limits.compile_cpu_time_s;
  compile.limits.wall_time_s = 2 * limits.compile_cpu_time_s + 1;
  compile.limits.memory_mb = 2048;
  compile.limits.file_size_mb = 64;
  compile.limits.max_processes = 16;
  compile.limits.max_open_files = 256;
  compile.limits.output_bytes = limits.output_bytes;
  compile.limits.stderr_bytes = limits.stderr_bytes;
  compile.work_dir_host = build.path();
  compile.user_program = false;
  RunResult compiled = launch(compile, "");
  RunResult::CompileStep step;
  step.ran = true;
  step.verdict = compiled.verdict;
  step.exit_code = compiled.exit_code;
  step.signal = compiled.signal;
  step.stdout_data = compiled.stdout_data;
  step.stderr_data = compiled.stderr_data;
  step.cpu_time_s = compiled.cpu_time_s;
  step.wall_time_s = compiled.wall_time_s;
  compiled.compile = step;
  if (compiled.verdict != Verdict::ok) {
    compiled.compile_error = compiled.verdict != Verdict::sandbox_error;
    if (compiled.compile_error) compiled.verdict = Verdict::runtime_error;
    if (compiled.message.empty()) compiled.message = "compilation failed";
    else compiled.message = "compilation failed: " + compiled.message;
    const std::size_t count = stop_at_first_failure ? std::min<std::size_t>(1, stdin_data.size()) : stdin_data.size();
    return std::vector<RunResult>(count, compiled);
  }
  std::ifstream in(build.path() + "/main", std::ios::binary);
  std::stringstream binary;
  binary << in.rdbuf();
  Impl::Launch run;
  run.executable = kCxxBinaryPath;
  run.argv = {kCxxBinaryPath};
  run.argv.insert(run.argv.end(), program.args.begin(), program.args.end());
  run.files = {{kCxxBinaryPath, binary.str(), true}};
  run.filter = &user_filter;
  run.exec_notify = true;
  run.limits = limits;
  for (const auto& input : stdin_data) {
    results.push_back(launch_in_work_dir(run, program, input));
    results.back().compile = step;
    if (stop_at_first_failure && results.back().verdict != Verdict::ok) break;
  }
  return results;
}

RunResult Sandbox::run(const Program& program, const std::string& stdin_data, const Limits& limits) {
  Impl& d = *impl_;
  if (auto why = validate_request(program, limits); !why.empty()) return invalid_request(why);
  if (program.language == Language::python) {
    Impl::Launch l;
    l.executable = d.config.python_path;
    l.argv = {d.config.python_path};
    if (!d.config.python_site_packages) l.argv.push_back("-S");
    if (!program.setup.empty() || !program.prelude.empty()) {
      l.argv.insert(l.argv.end(), {"-c", kOneShotSetupBoot, program.prelude.empty() ? "-" : kPreludePath,
                                   program.setup.empty() ? "-" : kSetupPath});
      l.files = {{kProgramPath, program.source}, {kSetupPath, program.setup}, {kPreludePath, program.prelude}};
    } else {
      l.files = {{kProgramPath, program.source}};
    }
    l.argv.push_back(kProgramPath);
    l.argv.insert(l.argv.end(), program.args.begin(), program.args.end());
    l.filter = &d.user_filter;
    l.exec_notify = true;
    l.limits = limits;
    return d.launch_in_work_dir(l, program, stdin_data);
  }
  auto results = run_batch(program, {stdin_data}, limits, false);
  return results.at(0);
}

std::vector<RunResult> Sandbox::run_batch(const Program& program, const std::vector<std::string>& stdin_data,
                                          const Limits& limits, bool stop_at_first_failure) {
  Impl& d = *impl_;
  std::vector<RunResult> results;
  if (auto why = validate_request(program, limits); !why.empty()) {
    results.assign(stop_at_first_failure ? std::min<std::size_t>(1, stdin_data.size()) : stdin_data.size(),
                   invalid_request(why));
    return results;
  }
  if (program.language == Language::python && (!program.files.empty() || !program.fetch_files.empty())) {
    // Every input starts from the same files and gets its own back: one-shot runs, each in a
    // working directory of its own (a fork server's children share their server's /tmp).
    for (const auto& input : stdin_data) {
      results.push_back(run(program, input, limits));
      if (stop_at_first_failure && results.back().verdict != Verdict::ok) break;
    }
    return results;
  }
  if (program.language == Language::cpp) {
    try {
      return d.run_cpp_batch(program, stdin_data, limits, stop_at_first_failure);
    } catch (const std::exception& e) {
      results.assign(stop_at_first_failure ? std::min<std::size_t>(1, stdin_data.size()) : stdin_data.size(),
                     invalid_request(std::string("sandbox could not prepare the C++ build: ") + e.what()));
      results.front().message = std::string("sandbox could not prepare the C++ build: ") + e.what();
      return results;
    }
  }
  // A warm server checked out for this batch (Config::warm_fork_servers), or one started for it.
  std::unique_ptr<WarmServer> warm;
  std::unique_ptr<ForkServer> own;
  ForkServer* server = nullptr;
  unsigned long server_id = 0;
  unsigned server_batch = 0;
  if (d.fork_server_usable() && stdin_data.size() >= 2) {
    std::string why;
    if (d.warm && d.warm_start_failures.load() < 3) {
      warm = d.warm->take(limits, program.prelude);
      if (!warm) {
        warm = d.start_warm_server(limits, program.prelude, why);
        if (warm) d.warm_start_failures = 0;
        else {
          ++d.warm_start_failures;
          d.note_fork_server_failure("warm fork server: " + why);
        }
      }
      if (warm && !d.begin_warm_batch(*warm, program, limits, why)) {
        d.note_fork_server_failure(why);
        warm.reset();
      }
      if (warm) {
        server = warm->server.get();
        server_id = warm->id;
        server_batch = warm->batches + 1;
      }
    }
    if (!server) {
      own = d.start_fork_server(program, limits, why);
      // A server that cannot start costs nothing but speed: every input still runs one-shot.
      d.note_fork_server_failure(own ? std::string() : why);
      if (own) {
        server = own.get();
        server_id = ++d.fork_server_serial;
        server_batch = 1;
      }
    }
  }
  for (const auto& input : stdin_data) {
    if (server && server->alive()) {
      RunResult r = server->run(input);
      r.fork_server = true;
      r.fork_server_id = server_id;
      r.fork_server_batch = server_batch;
      if (r.verdict == Verdict::sandbox_error) {
        // A failing server is retired and the input rerun one-shot, so the program is judged
        // and not the sandbox.
        d.note_fork_server_failure(r.message);
        server = nullptr;
        warm.reset();
        own.reset();
        r = run(program, input, limits);
      }
      results.push_back(std::move(r));
    } else {
      results.push_back(run(program, input, limits));
    }
    if (stop_at_first_failure && results.back().verdict != Verdict::ok) break;
  }
  // A warm server goes back to the pool only once it has said that nothing of this batch is left
  // (no process but itself, an empty /tmp), and only until it has served its share of batches.
  if (warm && warm->server->alive() && warm->server->end_batch(5.0) &&
      ++warm->batches < static_cast<unsigned>(d.config.warm_fork_server_batches))
    d.warm->give_back(std::move(warm));
  return results;
}

}  // namespace distil::sandbox
