// Sandbox: probes the host once, then runs programs one-shot (clone + exec per run) or, for
// batches of Python inputs, through a fork server (fork_server.h).
#include "sandbox/sandbox.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "sandbox/namespaces.h"
#include "sandbox/rlimits.h"
#include "sandbox/root_fs.h"
#include "sandbox/seccomp_policy.h"
#include "sandbox/supervisor.h"

namespace distil::sandbox {

using namespace detail;

namespace {

constexpr const char* kProgramPath = "/box/main.py";
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

std::string dirname_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

bool under_usr(const std::string& path) { return path.rfind("/usr/", 0) == 0; }

std::vector<std::string> sandbox_environment() {
  // PYTHONHASHSEED is fixed so a fork-server child and a one-shot run iterate sets identically.
  return {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "TMPDIR=/tmp", "LANG=C.UTF-8",
          "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1"};
}

}  // namespace

struct Sandbox::Impl {
  Config config;
  IsolationReport report;
  bool namespaces = false;
  bool privileged = false;  // euid 0 on the host: may map arbitrary outside ids
  SeccompProgram user_filter_notify;  // user code, exec answered by the supervisor
  SeccompProgram user_filter_deny;    // user code, no exec at all (fork-server children)
  SeccompProgram compiler_filter;     // g++ and its subprocesses
  std::atomic<unsigned> run_counter{0};

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
    const SeccompProgram* filter = nullptr;
    bool exec_notify = false;
    Limits limits;
    std::string work_dir_host;  // bound at /tmp instead of a tmpfs (compile step)
  };

  RunResult launch(const Launch& l, const std::string& stdin_data);
};

Sandbox::Sandbox(Config config) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.config = std::move(config);
  IsolationReport& r = d.report;
  // Writing to a program that closed its stdin must give EPIPE, not kill the server.
  signal(SIGPIPE, SIG_IGN);
  d.privileged = geteuid() == 0;

  if (d.config.use_namespaces) {
    const std::string why = probe_namespaces();
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
    d.user_filter_notify = build_seccomp_program(SeccompPolicy::user_program, ExecRule::notify);
    d.user_filter_deny = build_seccomp_program(SeccompPolicy::user_program, ExecRule::deny);
    d.compiler_filter = build_seccomp_program(SeccompPolicy::supervisor, ExecRule::allow);
    r.seccomp = true;
  } catch (const std::exception& e) {
    r.notes.push_back(std::string("seccomp unavailable: ") + e.what());
  }
  r.rlimits = true;
  r.no_new_privs = true;
  r.cgroup = false;
  r.notes.push_back("cgroup limits not active: memory is bounded by RLIMIT_AS, processes by RLIMIT_NPROC");

  const bool basic_ok = r.seccomp && r.rlimits;
  const bool ns_ok = basic_ok && d.namespaces;
  const bool full_ok = ns_ok && r.cgroup;
  std::string missing;
  switch (d.config.minimum) {
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

Sandbox::~Sandbox() = default;

const IsolationReport& Sandbox::isolation() const { return impl_->report; }
const Config& Sandbox::config() const { return impl_->config; }

RunResult Sandbox::Impl::launch(const Launch& l, const std::string& stdin_data) {
  SpawnOptions options;
  options.namespaces = namespaces;
  options.privileged_maps = privileged;
  options.outside_root = next_outside_root();
  ChildPlan& plan = options.plan;
  plan.rlimits = plan_rlimits(l.limits);
  plan.no_new_privs = true;
  std::optional<sock_fprog> fprog;
  if (l.filter && report.seccomp) {
    fprog = l.filter->fprog();
    plan.seccomp = &*fprog;
    plan.seccomp_listener = l.exec_notify;
  }

  std::vector<std::string> argv = l.argv;
  std::string executable = l.executable;
  std::optional<RootLayout> layout;
  std::optional<ScratchDir> scratch;  // degraded mode: the work dir is a host directory
  std::vector<std::string> step_targets;
  if (namespaces) {
    layout.emplace(readonly_paths(), l.files, l.limits.file_size_mb, l.work_dir_host);
    plan.root = &layout->plan();
    for (int i = 0; i < plan.root->step_count; ++i) step_targets.push_back(plan.root->steps[i].target);
    plan.hostname = "sandbox";
    plan.work_dir = "/tmp";
    plan.become_namespace_root = true;
    plan.change_ids = privileged;
    plan.drop_capabilities = !privileged;
    plan.uid = kSandboxUid;
    plan.gid = kSandboxGid;
  } else {
    // Without a mount namespace the program lives in a private host directory; paths under
    // /box in argv are rewritten to it.
    scratch.emplace(l.work_dir_host.empty() ? kScratchBase : l.work_dir_host);
    for (const auto& f : l.files) {
      const std::string host = scratch->path() + "/" + f.path.substr(5);
      std::ofstream out(host, std::ios::binary);
      out << f.content;
      if (!out) throw std::runtime_error("writing " + host);
      out.close();
      chmod(host.c_str(), f.executable ? 0555 : 0444);
    }
    auto rewrite = [&](std::string& s) {
      if (s.rfind("/box/", 0) == 0) s = scratch->path() + "/" + s.substr(5);
    };
    for (auto& a : argv) rewrite(a);
    rewrite(executable);
    plan.work_dir = l.work_dir_host.empty() ? scratch->path().c_str() : l.work_dir_host.c_str();
    if (privileged) {
      // Run as an otherwise unused host uid so kill/ptrace cannot reach anything else.
      plan.change_ids = true;
      plan.uid = options.outside_root + 1;
      plan.gid = options.outside_root + 1;
      if (chown(scratch->path().c_str(), plan.uid, plan.gid) != 0)
        throw std::runtime_error("chown " + scratch->path() + ": " + std::strerror(errno));
    }
  }
  ArgvBuilder argv_c(argv);
  ArgvBuilder env_c(sandbox_environment());
  plan.executable = executable.c_str();
  plan.argv = argv_c.get();
  plan.envp = env_c.get();

  ChildProcess child;
  try {
    child = spawn_child(options);
  } catch (const std::exception& e) {
    RunResult r;
    r.verdict = Verdict::sandbox_error;
    r.message = e.what();
    return r;
  }
  StdioPump pump(std::move(child.stdin_w), stdin_data, std::move(child.stdout_r), std::move(child.stderr_r),
                 l.limits.output_bytes);
  const Termination t = supervise(child, pump, wall_deadline_s(l.limits), &step_targets);
  return make_result(t, pump, l.limits);
}

RunResult Sandbox::run(const Program& program, const std::string& stdin_data, const Limits& limits) {
  Impl& d = *impl_;
  if (program.language == Language::python) {
    Impl::Launch l;
    l.executable = d.config.python_path;
    l.argv = {d.config.python_path};
    if (!d.config.python_site_packages) l.argv.push_back("-S");
    l.argv.push_back(kProgramPath);
    l.argv.insert(l.argv.end(), program.args.begin(), program.args.end());
    l.files = {{kProgramPath, program.source}};
    l.filter = &d.user_filter_notify;
    l.exec_notify = true;
    l.limits = limits;
    return d.launch(l, stdin_data);
  }
  auto results = run_batch(program, {stdin_data}, limits, false);
  return results.at(0);
}

std::vector<RunResult> Sandbox::run_batch(const Program& program, const std::vector<std::string>& stdin_data,
                                          const Limits& limits, bool stop_at_first_failure) {
  Impl& d = *impl_;
  std::vector<RunResult> results;
  if (program.language == Language::cpp) {
    // Compile once in a sandbox that may exec (cc1plus, as, ld), into a scratch directory bound
    // at /tmp, then run the binary like any other program.
    ScratchDir build(kScratchBase);
    if (chmod(build.path().c_str(), 0777) != 0)
      throw std::runtime_error("chmod " + build.path() + ": " + std::strerror(errno));
    Impl::Launch compile;
    compile.executable = d.config.cxx_path;
    compile.argv = {d.config.cxx_path, "-std=c++17", "-O2", "-pipe", "-o", "/tmp/main", kCxxSourcePath};
    compile.files = {{kCxxSourcePath, program.source}};
    compile.filter = &d.compiler_filter;
    compile.limits.cpu_time_s = 20;
    compile.limits.wall_time_s = 40;
    compile.limits.memory_mb = 2048;
    compile.limits.file_size_mb = 64;
    compile.limits.max_processes = 16;
    compile.limits.max_open_files = 256;
    compile.limits.output_bytes = limits.output_bytes;
    compile.work_dir_host = build.path();
    RunResult compiled = d.launch(compile, "");
    if (compiled.verdict != Verdict::ok) {
      compiled.compile_error = compiled.verdict != Verdict::sandbox_error;
      if (compiled.compile_error) compiled.verdict = Verdict::runtime_error;
      if (compiled.message.empty()) compiled.message = "compilation failed";
      else compiled.message = "compilation failed: " + compiled.message;
      const std::size_t count = stop_at_first_failure ? 1 : stdin_data.size();
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
    run.filter = &d.user_filter_notify;
    run.exec_notify = true;
    run.limits = limits;
    for (const auto& input : stdin_data) {
      results.push_back(d.launch(run, input));
      if (stop_at_first_failure && results.back().verdict != Verdict::ok) break;
    }
    return results;
  }
  for (const auto& input : stdin_data) {
    results.push_back(run(program, input, limits));
    if (stop_at_first_failure && results.back().verdict != Verdict::ok) break;
  }
  return results;
}

}  // namespace distil::sandbox
