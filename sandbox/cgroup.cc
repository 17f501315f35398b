#include "sandbox/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace distil::sandbox::detail {
namespace {

std::string write_file(const std::string& path, const std::string& value) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return path + ": " + std::strerror(errno);
  const ssize_t n = write(fd, value.data(), value.size());
  const int err = n < 0 ? errno : EIO;
  close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    errno = err;  // callers tell EBUSY apart
    return path + ": " + std::strerror(err);
  }
  return {};
}

bool has_words(const std::string& text, std::initializer_list<const char*> words) {
  for (const char* w : words) {
    std::istringstream in(text);
    std::string t;
    bool found = false;
    while (in >> t) found = found || t == w;
    if (!found) return false;
  }
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Value of "key N" in a flat-keyed file (memory.events, memory.oom_control); -1 if absent.
long keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  long v;
  while (in >> k >> v)
    if (k == key) return v;
  return -1;
}

// Mount points by filesystem type and (for v1) controller, from /proc/self/mountinfo.
std::string find_mount(const std::string& fstype, const std::string& controller) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, devno, root, mount_point, type, source, options;
    pre >> id >> parent >> devno >> root >> mount_point;
    post >> type >> source >> options;
    if (type != fstype) continue;
    if (controller.empty()) return mount_point;
    std::istringstream opts(options);
    std::string opt;
    while (std::getline(opts, opt, ','))
      if (opt == controller) return mount_point;
  }
  return {};
}

// Our own cgroup path in a hierarchy, from /proc/self/cgroup ("" controller list: v2).
std::string own_path(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find(':');
    const auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controller.empty() ? controllers.empty() : ("," + controllers + ",").find("," + controller + ",") != std::string::npos)
      return path == "/" ? std::string() : path;
  }
  return {};
}

int open_control(const std::string& path, int flags) { return open(path.c_str(), flags | O_CLOEXEC); }

std::string fd_read(const UniqueFd& fd) {
  if (!fd.valid()) return {};
  char buf[4096];
  const ssize_t n = pread(fd.get(), buf, sizeof(buf) - 1, 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

std::string fd_write(const UniqueFd& fd, const std::string& value, const char* what) {
  if (!fd.valid()) return std::string(what) + ": not open";
  const ssize_t n = pwrite(fd.get(), value.data(), value.size(), 0);
  if (n != static_cast<ssize_t>(value.size())) return std::string(what) + ": " + std::strerror(n < 0 ? errno : EIO);
  return {};
}

bool make_dir(const std::string& path, std::string& error) {
  if (mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return true;
  error = "mkdir " + path + ": " + std::strerror(errno);
  return false;
}

// Directory names carry the PID namespace, so a server only ever judges pids it can see.
std::string name_prefix() {
  struct stat st {};
  const unsigned long ns = stat("/proc/self/ns/pid", &st) == 0 ? static_cast<unsigned long>(st.st_ino) : 0;
  return "distil-sandbox-" + std::to_string(ns) + "-";
}

// Removes what servers of this PID namespace that died without cleaning up (SIGKILL, crash)
// left in `parent`: directories distil-sandbox-<pidns>-<pid>-<n> whose pid no longer exists.
// Their processes died with their server (parent-death signal), so the cgroups are empty.
void remove_stale(const std::string& parent) {
  const std::string prefix = name_prefix();
  DIR* dir = opendir(parent.c_str());
  if (!dir) return;
  std::vector<std::string> stale;
  while (dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name.rfind(prefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) stale.push_back(parent + "/" + name);
  }
  closedir(dir);
  for (const auto& base : stale) {
    if (DIR* runs = opendir(base.c_str())) {
      std::vector<std::string> children;
      while (dirent* e = readdir(runs))
        if (std::string(e->d_name).rfind("run-", 0) == 0) children.push_back(base + "/" + e->d_name);
      closedir(runs);
      for (const auto& child : children) rmdir(child.c_str());
    }
    rmdir(base.c_str());
  }
}

// Makes `own` (this server's cgroup v2) hand the memory and pids controllers to its children.
// cgroup v2 lets a cgroup enable controllers for its children only while no process lives in
// it (the "no internal processes" rule; the root is exempt), and a server started in a delegated
// cgroup (systemd Delegate=yes, a container with a private cgroup namespace) lives in exactly
// such a cgroup. So, as systemd's delegation contract asks, it first moves itself into a leaf of
// its own, `<leaf>-server` (removed as stale once this process is gone). Empty string, or why
// cgroup v2 cannot be used here.
std::string delegate_v2(const std::string& own, const std::string& leaf) {
  const std::string offered = read_file(own + "/cgroup.controllers");
  if (!has_words(offered, {"memory", "pids"})) {
    std::string shown = offered;
    while (!shown.empty() && (shown.back() == '\n' || shown.back() == ' ')) shown.pop_back();
    return "cgroup v2 at " + own + " offers '" + shown +
           "', not memory and pids (a controller that a cgroup v1 hierarchy holds, see /proc/cgroups, is never offered "
           "to cgroup v2)";
  }
  if (has_words(read_file(own + "/cgroup.subtree_control"), {"memory", "pids"})) return {};
  std::string error = write_file(own + "/cgroup.subtree_control", "+memory +pids");
  if (error.empty()) return {};
  if (errno != EBUSY) return "enabling memory and pids for the children of " + own + ": " + error;
  const std::string server_leaf = own + "/" + leaf + "-server";
  if (!make_dir(server_leaf, error)) return error;
  if (error = write_file(server_leaf + "/cgroup.procs", std::to_string(getpid())); !error.empty()) {
    rmdir(server_leaf.c_str());
    return "moving this server into " + server_leaf +
           " (cgroup v2 enables controllers for children only in a cgroup without processes): " + error;
  }
  if (error = write_file(own + "/cgroup.subtree_control", "+memory +pids"); !error.empty())
    return "enabling memory and pids for the children of " + own + " after moving this server into " + server_leaf +
           ": " + error + " (other processes live in " + own + ")";
  return {};
}

// Where this process's cgroup v2 was before delegate_v2 moved it (later Sandbox objects of the
// process use the same parent rather than nesting one level deeper each).
std::string v2_home(const std::string& mount) {
  static std::mutex mutex;
  static std::string home;
  std::lock_guard lock(mutex);
  if (home.empty()) home = mount + own_path("");
  return home;
}

}  // namespace

RunCgroup::RunCgroup(CgroupManager* owner, CgroupSlot* slot, bool v2) : owner_(owner), slot_(slot), v2_(v2) {
  oom_baseline_ = std::max(0L, oom_kills_total());
  // v1 keeps the peak since the last reset; start this run's from zero.
  if (!v2_ && slot_->peak.valid()) fd_write(slot_->peak, "0", "memory.max_usage_in_bytes");
}

RunCgroup::~RunCgroup() {
  kill_all();
  // Processes killed a moment ago may still be exiting; a cgroup that does not empty is not
  // reused (it is removed with the manager).
  for (int attempt = 0; attempt < 20 && !empty(); ++attempt) usleep(500);
  if (empty()) owner_->give_back(slot_);
}

std::string RunCgroup::begin_run(std::size_t memory_bytes, int pids_max) {
  if (auto error = owner_->set_limits(*slot_, memory_bytes, pids_max); !error.empty()) return error;
  oom_baseline_ = std::max(0L, oom_kills_total());
  if (!v2_ && slot_->peak.valid()) return fd_write(slot_->peak, "0", "memory.max_usage_in_bytes");
  return {};
}

bool RunCgroup::empty() const {
  for (const auto& procs : slot_->procs)
    if (procs.valid() && fd_read(procs).find_first_of("0123456789") != std::string::npos) return false;
  return true;
}

int RunCgroup::self_move_fd() const { return slot_->tasks.valid() ? slot_->tasks.get() : -1; }

std::string RunCgroup::add(pid_t pid) const {
  for (const auto& procs : slot_->procs)
    if (procs.valid())
      if (auto err = fd_write(procs, std::to_string(pid), "cgroup.procs"); !err.empty()) return err;
  return {};
}

long RunCgroup::oom_kills_total() const { return keyed_value(fd_read(slot_->oom_events), "oom_kill"); }

long RunCgroup::oom_kills() const {
  const long total = oom_kills_total();
  return total < 0 ? -1 : total - oom_baseline_;
}

std::size_t RunCgroup::peak_kb() const {
  // cgroup v2's memory.peak cannot be reset for a reused cgroup; rusage covers it there.
  if (v2_) return 0;
  const std::string text = fd_read(slot_->peak);
  return text.empty() ? 0 : static_cast<std::size_t>(std::strtoull(text.c_str(), nullptr, 10) / 1024);
}

std::vector<pid_t> RunCgroup::pids() const {
  std::vector<pid_t> out;
  if (slot_->dirs.empty()) return out;
  // A fresh descriptor: cgroup v1 keeps the pid list it built for an open file and serves it
  // again to reads that follow within a second, so the pooled descriptor can answer with the
  // processes of an earlier moment (an empty list while the run is full of processes).
  const UniqueFd fd(open_control(slot_->dirs[0] + "/cgroup.procs", O_RDONLY));
  if (!fd.valid()) return out;
  std::string text;  // read whole: a run may hold thousands of processes
  char buf[16384];
  for (;;) {
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  std::istringstream in(text);
  pid_t pid;
  while (in >> pid) out.push_back(pid);
  return out;
}

void RunCgroup::kill_all() const {
  if (v2_ && slot_->kill.valid() && fd_write(slot_->kill, "1", "cgroup.kill").empty()) return;
  for (int round = 0; round < 3; ++round) {
    std::istringstream pids(fd_read(slot_->procs[0]));
    pid_t pid;
    bool any = false;
    while (pids >> pid) {
      kill(pid, SIGKILL);
      any = true;
    }
    if (!any) return;
  }
}

std::unique_ptr<CgroupManager> CgroupManager::detect(std::string& why_not) {
  std::unique_ptr<CgroupManager> m(new CgroupManager());
  // One directory per manager: several Sandbox objects may live in one process.
  static std::atomic<unsigned> instances{0};
  const std::string leaf = name_prefix() + std::to_string(getpid()) + "-" + std::to_string(instances.fetch_add(1));
  std::string error;

  const std::string v2_mount = find_mount("cgroup2", "");
  std::string v2_why;
  if (!v2_mount.empty()) {
    const std::string own = v2_home(v2_mount);
    remove_stale(own);
    v2_why = delegate_v2(own, leaf);
    if (v2_why.empty()) {
      const std::string base = own + "/" + leaf;
      if (make_dir(base, error)) {
        error = write_file(base + "/cgroup.subtree_control", "+memory +pids");
        if (error.empty()) {
          m->v2_ = true;
          m->bases_ = {base};
          return m;
        }
      }
      rmdir(base.c_str());
      v2_why = "cgroup v2 at " + own + ": " + error;
    }
  }
  // cgroup v1: the memory controller only. Processes are already bounded per run by
  // RLIMIT_NPROC (each run has its own uid), so the pids hierarchy is not worth a second move
  // (and a second `tasks` descriptor in every child).
  const std::string memory_mount = find_mount("cgroup", "memory");
  if (!memory_mount.empty()) {
    remove_stale(memory_mount + own_path("memory"));
    const std::string memory_base = memory_mount + own_path("memory") + "/" + leaf;
    if (make_dir(memory_base, error)) {
      m->bases_ = {memory_base};
      m->v2_not_used_ = v2_why;
      return m;
    }
    why_not = "cgroup v1 memory hierarchy not writable: " + error;
    return nullptr;
  }
  why_not = v2_mount.empty() ? "no cgroup hierarchy with memory and pids controllers is mounted" : v2_why;
  return nullptr;
}

std::string CgroupManager::description() const {
  std::string s = v2_ ? "cgroup v2 (memory, pids) at " : "cgroup v1 memory (processes: per-run RLIMIT_NPROC) at ";
  for (std::size_t i = 0; i < bases_.size(); ++i) s += (i ? ", " : "") + bases_[i];
  if (!v2_not_used_.empty()) s += " (not cgroup v2: " + v2_not_used_ + ")";
  return s;
}

CgroupManager::~CgroupManager() {
  for (const auto& slot : all_) {
    for (auto& fd : slot->procs) fd.reset();
    for (auto it = slot->dirs.rbegin(); it != slot->dirs.rend(); ++it) rmdir(it->c_str());
  }
  for (const auto& base : bases_) rmdir(base.c_str());
}

void CgroupManager::give_back(CgroupSlot* slot) {
  std::lock_guard lock(mutex_);
  idle_.push_back(slot);
}

CgroupSlot* CgroupManager::make_slot(std::string& error) {
  auto slot = std::make_unique<CgroupSlot>();
  const std::string name = "/run-" + std::to_string(counter_.fetch_add(1));
  for (const auto& base : bases_) {
    if (!make_dir(base + name, error)) {
      for (const auto& d : slot->dirs) rmdir(d.c_str());
      return nullptr;
    }
    slot->dirs.push_back(base + name);
  }
  const std::string& mem = slot->dirs[0];
  for (std::size_t i = 0; i < slot->dirs.size() && i < 1; ++i)
    slot->procs[i].reset(open_control(slot->dirs[i] + "/cgroup.procs", O_RDWR));
  if (v2_) {
    slot->memory_limit.reset(open_control(mem + "/memory.max", O_WRONLY));
    slot->memsw_limit.reset(open_control(mem + "/memory.swap.max", O_WRONLY));
    slot->pids_max.reset(open_control(mem + "/pids.max", O_WRONLY));
    slot->oom_events.reset(open_control(mem + "/memory.events", O_RDONLY));
    slot->kill.reset(open_control(mem + "/cgroup.kill", O_WRONLY));
  } else {
    slot->memory_limit.reset(open_control(mem + "/memory.limit_in_bytes", O_WRONLY));
    slot->memsw_limit.reset(open_control(mem + "/memory.memsw.limit_in_bytes", O_WRONLY));
    slot->oom_events.reset(open_control(mem + "/memory.oom_control", O_RDONLY));
    slot->peak.reset(open_control(mem + "/memory.max_usage_in_bytes", O_RDWR));
    slot->tasks.reset(open_control(mem + "/tasks", O_WRONLY));  // optional: add() still works
  }
  if (!slot->procs[0].valid() || !slot->memory_limit.valid() || (v2_ && !slot->pids_max.valid())) {
    error = "opening the control files of " + mem + ": " + std::strerror(errno);
    for (auto it = slot->dirs.rbegin(); it != slot->dirs.rend(); ++it) rmdir(it->c_str());
    return nullptr;
  }
  std::lock_guard lock(mutex_);
  all_.push_back(std::move(slot));
  return all_.back().get();
}

std::string CgroupManager::set_limits(CgroupSlot& slot, std::size_t memory_bytes, int pids_max) {
  if (slot.memory_bytes != memory_bytes) {
    const std::string memory = std::to_string(memory_bytes);
    std::string error;
    if (v2_) {
      error = fd_write(slot.memory_limit, memory, "memory.max");
      if (error.empty() && slot.memsw_limit.valid()) error = fd_write(slot.memsw_limit, "0", "memory.swap.max");
    } else {
      // With swap accounting, swap must not extend the limit; the kernel keeps memsw >= memory
      // at every step, so the order depends on the direction of the change.
      const bool raising = memory_bytes > slot.memory_bytes && slot.memory_bytes != 0;
      if (raising && slot.memsw_limit.valid()) error = fd_write(slot.memsw_limit, memory, "memory.memsw.limit_in_bytes");
      if (error.empty()) error = fd_write(slot.memory_limit, memory, "memory.limit_in_bytes");
      if (error.empty() && !raising && slot.memsw_limit.valid())
        error = fd_write(slot.memsw_limit, memory, "memory.memsw.limit_in_bytes");
    }
    if (!error.empty()) return error;
    slot.memory_bytes = memory_bytes;
  }
  if (slot.pids_max.valid() && slot.pids != pids_max) {
    if (auto error = fd_write(slot.pids_max, std::to_string(pids_max), "pids.max"); !error.empty()) return error;
    slot.pids = pids_max;
  }
  return {};
}

std::unique_ptr<RunCgroup> CgroupManager::create(std::size_t memory_bytes, int pids_max, std::string& error) {
  CgroupSlot* slot = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      slot = idle_.back();
      idle_.pop_back();
    }
  }
  if (!slot && !(slot = make_slot(error))) return nullptr;
  error = set_limits(*slot, memory_bytes, pids_max);
  if (!error.empty()) {
    give_back(slot);
    return nullptr;
  }
  return std::make_unique<RunCgroup>(this, slot, v2_);
}

}  // namespace distil::sandbox::detail
