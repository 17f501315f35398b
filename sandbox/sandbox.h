// Public interface of the sandbox: run untrusted programs under namespaces, seccomp, rlimits
// and cgroups, and report what happened. This header is the only one other folders include.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::sandbox {

enum class Language { python, cpp };

enum class Verdict {
  ok,
  runtime_error,
  time_limit,
  memory_limit,
  output_limit,
  sandbox_error,
  syscall_denied,
};

std::string to_string(Verdict v);
std::string to_string(Language l);
Language language_from_string(const std::string& s);  // throws std::invalid_argument

struct Limits {
  double cpu_time_s = 6.0;         // RLIMIT_CPU and the CPU part of the verdict
  double wall_time_s = 0.0;        // 0: derived from cpu_time_s (2x + 1 s)
  std::size_t memory_mb = 512;     // address space / cgroup memory.max
  std::size_t output_bytes = 64 * 1024;  // cap for stdout (and for stderr unless stderr_bytes is set)
  std::size_t stderr_bytes = 0;          // cap for stderr; 0: the same as output_bytes
  std::size_t file_size_mb = 16;   // RLIMIT_FSIZE and tmpfs size
  int max_processes = 32;          // cgroup pids.max / RLIMIT_NPROC inside the user namespace
  int max_open_files = 64;
  // C++ only: the compile step's CPU limit (0.001-3600 s); its wall limit is twice this plus 1 s.
  double compile_cpu_time_s = 20.0;
};

// A file in the program's working directory (/tmp inside the sandbox), by a path relative to it.
struct WorkFile {
  std::string path;  // "data/input.txt"; see work_path_problem()
  std::string content;
};

// Why `path` cannot name a file in the working directory (empty: it can): it must be relative,
// with no ".." component, no NUL byte, components of at most 255 bytes, at most 4096 bytes in all.
// "." and empty components ("a//b", "./a") are allowed and mean nothing.
std::string work_path_problem(const std::string& path);

// One program to run. For Language::cpp `source` is compiled first (compile errors come back
// as verdict runtime_error with `compile_error = true`).
struct Program {
  Language language = Language::python;
  std::string source;
  std::vector<std::string> args;
  // Python only, optional: code run in the program's __main__ namespace before `source` (as if it
  // were a module-level prefix, but compiled separately, so the program keeps its own file name and
  // line numbers). A fork server runs it once, before forking, and every child starts from what it
  // left (imports done, names defined); a one-shot run runs it first in the same process. An
  // exception it raises is reported like one of the program's. Trusted code (the caller's).
  std::string setup;
  // Python only, optional: trusted code that does not depend on the program (the code grader's
  // LiveCodeBench import block), run before `setup` into a module of its own, which `setup` and
  // the program then find as the global `__prelude__`. A fork server runs it once, before any
  // child; a warm one at its start (warm servers are kept per prelude, so one that ran it serves
  // only programs with the same prelude): its names are then shared by every child without being
  // bound again in each. A one-shot run runs it first in the same process.
  std::string prelude;
  // Optional: files written into the working directory before the program starts (directories
  // are created; mode 0666, directories 0777). With files or fetch_files the working directory is
  // a private host directory bound at /tmp instead of the size-capped tmpfs: each file the program
  // writes is still capped by file_size_mb (RLIMIT_FSIZE), but not their number.
  std::vector<WorkFile> files;
  // Optional: files read back from the working directory once the run is over (RunResult::files):
  // regular files only, opened without following any symbolic link; a path that is missing, not
  // a regular file or reached through a link is left out, as is any file once the ones read
  // before it total more than fetch_max_bytes.
  std::vector<std::string> fetch_files;
  std::size_t fetch_max_bytes = 16u << 20;
};

struct RunResult {
  Verdict verdict = Verdict::sandbox_error;
  int exit_code = -1;   // valid when signal == 0
  int signal = 0;       // terminating signal, 0 if the process exited
  std::string stdout_data;
  std::string stderr_data;
  bool stdout_truncated = false;
  bool stderr_truncated = false;
  bool compile_error = false;
  double cpu_time_s = 0.0;
  double wall_time_s = 0.0;
  std::size_t peak_memory_kb = 0;
  std::string message;  // human-readable detail for sandbox_error / syscall_denied etc.
  bool fork_server = false;  // ran as a fork-server child (run_batch) rather than one-shot
  // Which fork server (a serial number per Sandbox; 0: none) and which of its batches this was:
  // 1 for the batch a server was started for, more on a warm server kept from earlier batches.
  unsigned long fork_server_id = 0;
  unsigned fork_server_batch = 0;
  std::vector<WorkFile> files;  // what Program::fetch_files found, in its order
  // C++: the compile step (filled also when it succeeded and the rest of the result is the run's;
  // `verdict` is the compile's own, e.g. time_limit, where the result says runtime_error).
  struct CompileStep {
    bool ran = false;
    Verdict verdict = Verdict::ok;
    int exit_code = -1;
    int signal = 0;
    std::string stdout_data;
    std::string stderr_data;
    double cpu_time_s = 0.0;
    double wall_time_s = 0.0;
  } compile;
};

nlohmann::json to_json(const RunResult& r);

// Which isolation layers are actually active on this host, machine-readable.
struct IsolationReport {
  bool user_namespace = false;
  bool pid_namespace = false;
  bool mount_namespace = false;
  bool network_namespace = false;
  bool ipc_namespace = false;
  bool uts_namespace = false;
  bool readonly_root = false;
  bool seccomp = false;
  bool rlimits = false;
  bool cgroup = false;
  bool no_new_privs = false;
  std::vector<std::string> notes;  // why a layer is off
};
nlohmann::json to_json(const IsolationReport& r);

enum class MinimumIsolation {
  basic,       // seccomp + rlimits + process group
  namespaces,  // basic + user/pid/mount/net namespaces and the read-only root
  full,        // namespaces + cgroup limits
};

struct Config {
  std::string python_path = "/usr/bin/python3";
  std::string cxx_path = "/usr/bin/g++";
  MinimumIsolation minimum = MinimumIsolation::basic;
  bool use_namespaces = true;   // try them; fall back honestly when the kernel refuses
  bool use_cgroups = true;
  bool use_fork_server = true;  // run_batch pays interpreter start once per batch
  // Python runs with -S (no site-packages, ~3x faster start) unless this is set.
  bool python_site_packages = false;
  // Extra host paths bind-mounted read-only at the same place inside the sandbox root
  // (e.g. an interpreter installed outside /usr). /usr and the /lib* and /bin links always are.
  std::vector<std::string> readonly_paths;
  // First outside uid/gid of the 65536 ids sandboxed processes map to; each run gets its own
  // pair so RLIMIT_NPROC counts per run. Must be unused on the host. 0: automatic, a range per
  // server process (1'600'000 + 65536 * (pid % 4096)); config() then reports the one chosen.
  unsigned outside_id_base = 0;
  // One-shot runs take a sandbox process cloned ahead of time (namespaces created, id maps
  // written, generic root built, already in its cgroup), and a background thread clones the
  // next one while the run executes (about 0.1 ms off a run; on cgroup v2, where the supervisor
  // moves the process and waits for an RCU grace period, 5-15 ms). How many are kept ready (0:
  // none, each run clones its own). The pool is refilled two at a time once it is down to
  // prespawned - 2. Used only with namespaces and cgroups.
  int prespawned = 4;
  // The constructor makes one real run (`python3 -S -c pass`) through the whole path, so that a
  // host which allows the namespaces but refuses a mount the root needs is found at start-up and
  // the sandbox degrades (saying why) before serving. false: the first real run is that probe
  // (a sandbox_error in its setup degrades the same way and the run is made again; run() then
  // throws std::runtime_error if `minimum` is no longer met). For a process that makes one run
  // (`distil-env run`), where the probe would double the cost.
  bool probe_at_start = true;
  // run_batch keeps up to this many fork servers warm between batches (0-64; 0: each batch
  // starts its own and it ends with the batch, as before). A warm server is a sandboxed
  // interpreter that imported the common modules and never runs any program's code; each batch
  // checks one out exclusively (so at most one per concurrent batch; keep it at least the number
  // of threads grading at once), and every input is a fresh child forked from it. Servers are
  // kept per memory_mb and file_size_mb (the interpreter's RLIMIT_AS and its /tmp size).
  int warm_fork_servers = 8;
  // A warm server is retired after this many batches (1-1000000) or this long unused (> 0 s).
  int warm_fork_server_batches = 500;
  double warm_fork_server_idle_s = 60;
};

class Sandbox {
 public:
  // Probes the host and throws std::runtime_error if `config.minimum` cannot be met.
  explicit Sandbox(Config config = {});
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // One run of `program` with `stdin_data`. Thread-safe.
  RunResult run(const Program& program, const std::string& stdin_data, const Limits& limits);

  // The same program against many inputs (one result per input, in order). Uses a fork server
  // where possible: the interpreter starts once, each input runs in a fresh forked child from
  // the same clean state. With stop_at_first_failure, inputs after the first result whose
  // verdict is not ok are not run and get no result (the vector is shorter). Thread-safe.
  std::vector<RunResult> run_batch(const Program& program, const std::vector<std::string>& stdin_data,
                                   const Limits& limits, bool stop_at_first_failure = false);

  // run() returns once the program and every process it started are dead and reaped (the
  // sandbox's init kills and reaps them, then reports); the init itself then exits in the
  // background, where the kernel tears down the run's namespaces, and its cgroup goes back to the
  // pool. This waits until that is done for every run finished so far (tests, shutdown).
  void settle();

  const IsolationReport& isolation() const;
  const Config& config() const;
  // Why the last run_batch could not start its fork server (empty: it could, or none was tried).
  std::string fork_server_failure() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distil::sandbox
