#include "sandbox/root_fs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <stdexcept>

namespace distil::sandbox::detail {
namespace {

// A bind mount inherits the source mount's flags; a user namespace may not clear the ones the
// host set (nosuid, nodev, noexec, atime), so the read-only remount must repeat them.
unsigned long locked_mount_flags(const std::string& path) {
  struct statfs fs {};
  if (statfs(path.c_str(), &fs) != 0) return 0;
  unsigned long flags = 0;
  if (fs.f_flags & ST_NOSUID) flags |= MS_NOSUID;
  if (fs.f_flags & ST_NODEV) flags |= MS_NODEV;
  if (fs.f_flags & ST_NOEXEC) flags |= MS_NOEXEC;
  if (fs.f_flags & ST_NOATIME) flags |= MS_NOATIME;
  if (fs.f_flags & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (fs.f_flags & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

bool is_prefix_dir(const std::string& prefix, const std::string& path) {
  return path == prefix || (path.size() > prefix.size() && path.compare(0, prefix.size(), prefix) == 0 &&
                            path[prefix.size()] == '/');
}

}  // namespace

const char* RootLayout::keep(std::string s) {
  strings_.push_back(std::move(s));
  return strings_.back().c_str();
}

void RootLayout::add_readonly(const std::string& host_path) {
  if (host_path.empty() || host_path[0] != '/' || host_path.find("/../") != std::string::npos)
    throw std::runtime_error("sandbox read-only path must be absolute and normalised: '" + host_path + "'");
  struct stat st {};
  if (lstat(host_path.c_str(), &st) != 0)
    throw std::runtime_error("sandbox read-only path does not exist: '" + host_path + "'");
  for (const auto& dir : created_dirs_)
    if (is_prefix_dir(dir, host_path)) return;  // already visible through a parent bind
  // Parent directories inside the new root.
  for (std::size_t pos = host_path.find('/', 1); pos != std::string::npos; pos = host_path.find('/', pos + 1)) {
    const std::string parent = host_path.substr(0, pos);
    bool exists = false;
    for (const auto& dir : created_dirs_) exists = exists || dir == parent;
    if (!exists) {
      steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + parent)});
      created_dirs_.push_back(parent);
    }
  }
  if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    const ssize_t n = readlink(host_path.c_str(), target, sizeof(target) - 1);
    if (n <= 0) throw std::runtime_error("sandbox read-only path: cannot read link '" + host_path + "'");
    steps_.push_back({RootStep::Kind::symlink, keep(std::string(target, static_cast<std::size_t>(n))),
                      keep(staging_ + host_path)});
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + host_path)});
  } else {
    steps_.push_back({RootStep::Kind::file, nullptr, keep(staging_ + host_path), "", 0});
  }
  RootStep bind{RootStep::Kind::bind_readonly, keep(host_path), keep(staging_ + host_path)};
  bind.remount_flags = locked_mount_flags(host_path);
  steps_.push_back(bind);
  created_dirs_.push_back(host_path);
}

RootLayout::RootLayout(const std::vector<std::string>& readonly_paths, const std::vector<File>& files,
                       std::size_t work_tmpfs_mb, const std::string& work_dir_host,
                       const std::string& box_dir_host) {
  std::size_t files_bytes = 0;
  for (const auto& f : files) files_bytes += f.content.size();
  plan_.staging = keep(staging_);
  // The root is read-only once built, so its size only caps what the setup writes (the files);
  // one size for every ordinary run keeps the root part of what a prespawned process prepares.
  plan_.root_options = keep("mode=0755,size=" + std::to_string(std::max<std::size_t>(files_bytes / 1024 + 1024, 80u << 10)) + "k");

  for (const char* path : {"/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"}) {
    struct stat st {};
    if (lstat(path, &st) == 0) add_readonly(path);
  }
  for (const auto& path : readonly_paths) add_readonly(path);
  // The dynamic loader's index of /usr's libraries (no secret: it lists paths under /usr).
  // Without it every library is searched for in a dozen hwcaps directories at each start.
  if (struct stat st {}; lstat("/etc/ld.so.cache", &st) == 0 && S_ISREG(st.st_mode)) add_readonly("/etc/ld.so.cache");

  steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + "/dev")});
  for (const char* dev : {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"}) {
    steps_.push_back({RootStep::Kind::file, nullptr, keep(staging_ + dev), "", 0});
    steps_.push_back({RootStep::Kind::bind_device, dev, keep(staging_ + dev)});
  }
  steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + "/dev/shm")});
  steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + "/proc")});
  // Only the PID namespace's processes (subset=pid, Linux 5.8): the rest of procfs is host-wide
  // (loadavg and stat count the host's processes, timer_list names them, diskstats and partitions
  // name its devices, meminfo, uptime, interrupts, ...), and an allowlist needs no list of what
  // to mask. Where the kernel lacks the option, the full procfs with the files that count the
  // host's processes masked (mask_proc: /dev/null bound over them).
  RootStep proc{RootStep::Kind::proc, "proc", keep(staging_ + "/proc"), "subset=pid"};
  proc.optional = true;  // refused when the host's /proc is partly masked; nothing needs it
  steps_.push_back(proc);
  for (const char* file : {"/proc/loadavg", "/proc/stat", "/proc/timer_list", "/proc/sched_debug"}) {
    RootStep mask{RootStep::Kind::mask_proc, "/dev/null", keep(staging_ + file)};
    mask.optional = true;  // absent files (and all of them under subset=pid) are skipped
    steps_.push_back(mask);
  }
  steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + "/etc")});
  steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + "/box")});
  steps_.push_back({RootStep::Kind::directory, nullptr, keep(staging_ + "/tmp")});
  plan_.generic_steps = static_cast<int>(steps_.size());  // everything above: config only
  for (const auto& f : files) {
    if (f.path.rfind("/box/", 0) != 0 || f.path.find('/', 5) != std::string::npos)
      throw std::runtime_error("sandbox file must be directly under /box: '" + f.path + "'");
    const char* content = keep(f.content);
    RootStep file{RootStep::Kind::file, nullptr, keep(staging_ + f.path), content, f.content.size()};
    file.mode = f.executable ? 0555 : 0444;
    steps_.push_back(file);
  }
  // POSIX shared memory and named semaphores (shm_open, sem_open: multiprocessing's locks) live
  // in /dev/shm: a tmpfs capped like /tmp (its pages count against the run's cgroup, and what is
  // mapped against RLIMIT_AS), emptied between fork-server children as /tmp is.
  steps_.push_back({RootStep::Kind::tmpfs, "tmpfs", keep(staging_ + "/dev/shm"),
                    keep("mode=1777,nr_inodes=1024,size=" + std::to_string(work_tmpfs_mb) + "m")});
  if (!box_dir_host.empty()) {
    if (!files.empty()) throw std::runtime_error("sandbox files and a host /box directory are exclusive");
    RootStep bind{RootStep::Kind::bind_readonly, keep(box_dir_host), keep(staging_ + "/box")};
    bind.remount_flags = locked_mount_flags(box_dir_host);
    steps_.push_back(bind);
  }
  if (work_dir_host.empty()) {
    steps_.push_back({RootStep::Kind::tmpfs, "tmpfs", keep(staging_ + "/tmp"),
                      keep("mode=1777,nr_inodes=4096,size=" + std::to_string(work_tmpfs_mb) + "m")});
  } else {
    if (is_prefix_dir(staging_, work_dir_host))
      throw std::runtime_error("sandbox work directory must not be under " + staging_ + ": " + work_dir_host);
    RootStep bind{RootStep::Kind::bind_writable, keep(work_dir_host), keep(staging_ + "/tmp")};
    bind.remount_flags = locked_mount_flags(work_dir_host);
    steps_.push_back(bind);
  }
  plan_.steps = steps_.data();
  plan_.step_count = static_cast<int>(steps_.size());
}

std::string generic_signature(const RootPlan& plan) {
  std::string s = std::string(plan.staging ? plan.staging : "") + '\n' + (plan.root_options ? plan.root_options : "") + '\n';
  for (int i = 0; i < plan.generic_steps && i < plan.step_count; ++i) {
    const RootStep& st = plan.steps[i];
    s += std::to_string(static_cast<int>(st.kind)) + ' ' + (st.source ? st.source : "") + ' ' + (st.target ? st.target : "") + ' ' +
         (st.data && st.kind != RootStep::Kind::file ? st.data : "") + ' ' + std::to_string(st.remount_flags) + ' ' +
         std::to_string(st.optional) + ' ' + std::to_string(st.mode) + ' ' + std::to_string(st.size) + '\n';
  }
  return s;
}

namespace {

int run_steps(const RootPlan& plan, int from, int to, int* step, int* detail) noexcept {
  bool full_proc = false;  // procfs mounted without subset=pid: mask_proc steps apply
  for (int i = from; i < to; ++i) {
    const RootStep& s = plan.steps[i];
    int rc = 0;
    switch (s.kind) {
      case RootStep::Kind::directory:
        rc = mkdir(s.target, 0755);
        if (rc != 0 && errno == EEXIST) rc = 0;
        break;
      case RootStep::Kind::file: {
        const int fd = open(s.target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, s.mode);
        if (fd < 0) {
          rc = -1;
          break;
        }
        std::size_t done = 0;
        while (rc == 0 && done < s.size) {
          const ssize_t n = write(fd, s.data + done, s.size - done);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) rc = -1;
          else done += static_cast<std::size_t>(n);
        }
        const int saved = errno;
        if (close(fd) != 0 && rc == 0) rc = -1;
        else errno = saved;
        break;
      }
      case RootStep::Kind::symlink:
        rc = symlink(s.source, s.target);
        break;
      case RootStep::Kind::bind_readonly:
        rc = mount(s.source, s.target, nullptr, MS_BIND | MS_REC, nullptr);
        if (rc == 0)
          rc = mount(nullptr, s.target, nullptr,
                     MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | s.remount_flags, nullptr);
        break;
      case RootStep::Kind::bind_writable:
        rc = mount(s.source, s.target, nullptr, MS_BIND, nullptr);
        if (rc == 0)
          rc = mount(nullptr, s.target, nullptr, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | s.remount_flags, nullptr);
        break;
      case RootStep::Kind::bind_device:
        rc = mount(s.source, s.target, nullptr, MS_BIND, nullptr);
        break;
      case RootStep::Kind::tmpfs:
        rc = mount(s.source, s.target, "tmpfs", MS_NOSUID | MS_NODEV, s.data);
        break;
      case RootStep::Kind::proc:
        rc = mount(s.source, s.target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, s.data);
        if (rc != 0 && errno == EINVAL && s.data) {  // a kernel without subset=pid
          rc = mount(s.source, s.target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
          full_proc = rc == 0;
        }
        break;
      case RootStep::Kind::mask_proc:
        if (!full_proc) break;
        rc = mount(s.source, s.target, nullptr, MS_BIND, nullptr);
        break;
    }
    if (rc != 0 && !s.optional) {
      *step = static_cast<int>(ChildStep::root_step);
      *detail = i;
      return errno ? errno : EIO;
    }
  }
  return 0;
}

}  // namespace

int build_root_generic(const RootPlan& plan, int* step, int* detail) noexcept {
  auto fail = [&](ChildStep s, int index) {
    *step = static_cast<int>(s);
    *detail = index;
    return errno ? errno : EIO;
  };
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return fail(ChildStep::private_mounts, -1);
  if (mount("tmpfs", plan.staging, "tmpfs", MS_NOSUID | MS_NODEV, plan.root_options) != 0)
    return fail(ChildStep::root_tmpfs, -1);
  return run_steps(plan, 0, plan.generic_steps, step, detail);
}

int build_root(const RootPlan& plan, int* step, int* detail) noexcept {
  auto fail = [&](ChildStep s, int index) {
    *step = static_cast<int>(s);
    *detail = index;
    return errno ? errno : EIO;
  };
  if (!plan.generic_done)
    if (const int err = build_root_generic(plan, step, detail); err != 0) return err;
  if (const int err = run_steps(plan, plan.generic_steps, plan.step_count, step, detail); err != 0) return err;
  // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
  if (chdir(plan.staging) != 0) return fail(ChildStep::pivot_root, -1);
  if (syscall(SYS_pivot_root, ".", ".") != 0) return fail(ChildStep::pivot_root, -1);
  if (umount2(".", MNT_DETACH) != 0) return fail(ChildStep::detach_old_root, -1);
  if (chdir("/") != 0) return fail(ChildStep::detach_old_root, -1);
  if (mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0)
    return fail(ChildStep::readonly_root, -1);
  return 0;
}

}  // namespace distil::sandbox::detail
