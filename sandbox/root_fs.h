// The sandbox's file system: a fresh tmpfs root holding read-only bind mounts of what the
// interpreter needs (/usr and the merged-/usr links), three device nodes, a private /proc, the
// program under /box (read-only) and a size-capped writable tmpfs at /tmp. pivot_root makes it
// "/" and the host's tree is detached, so nothing else of the host is reachable by path.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "sandbox/child.h"

namespace distil::sandbox::detail {

// Parent side: owns the strings the child's RootPlan points into.
class RootLayout {
 public:
  struct File {
    std::string path;  // inside the sandbox, e.g. "/box/main.py"
    std::string content;
    bool executable = false;
  };
  // Throws std::runtime_error when a read-only path does not exist on the host.
  // `work_dir_host` empty: /tmp is a fresh tmpfs of `work_tmpfs_mb`; otherwise that host
  // directory is bound writable at /tmp (the C++ compile step keeps its output there).
  // `box_dir_host` non-empty: that host directory is bound read-only at /box instead of `files`
  // (a warm fork server, whose supervisor writes each batch's program there).
  RootLayout(const std::vector<std::string>& readonly_paths, const std::vector<File>& files,
             std::size_t work_tmpfs_mb, const std::string& work_dir_host = {},
             const std::string& box_dir_host = {});
  const RootPlan& plan() const { return plan_; }

 private:
  const char* keep(std::string s);
  void add_readonly(const std::string& host_path);
  std::deque<std::string> strings_;
  std::vector<RootStep> steps_;
  std::vector<std::string> created_dirs_;
  RootPlan plan_;
  std::string staging_ = "/tmp";
};

// Child side, async-signal-safe: mounts, pivots and remounts read-only. Returns 0 or errno;
// `step` says which ChildStep failed and `detail` the index of the root step.
int build_root(const RootPlan& plan, int* step, int* detail) noexcept;
// Only the private propagation, the root tmpfs and steps [0, generic_steps).
int build_root_generic(const RootPlan& plan, int* step, int* detail) noexcept;

// What the generic part of `plan` does, to check that a prespawned process built the same.
std::string generic_signature(const RootPlan& plan);

}  // namespace distil::sandbox::detail
