#include "sandbox/namespaces.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace distil::sandbox::detail {
namespace {

std::string write_file(const std::string& path, const std::string& content) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return path + ": " + std::strerror(errno);
  const ssize_t n = write(fd, content.data(), content.size());
  const int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(content.size())) return path + ": " + std::strerror(n < 0 ? err : EIO);
  return {};
}

}  // namespace

int namespace_clone_flags() {
  return CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
}

std::string write_id_maps(pid_t child, unsigned outside_root, bool privileged) {
  const std::string proc = "/proc/" + std::to_string(child);
  if (privileged) {
    const std::string map = "0 " + std::to_string(outside_root) + " 1\n" + std::to_string(kSandboxUid) + " " +
                            std::to_string(outside_root + 1) + " 1\n";
    if (auto err = write_file(proc + "/uid_map", map); !err.empty()) return err;
    const std::string gmap = "0 " + std::to_string(outside_root) + " 1\n" + std::to_string(kSandboxGid) + " " +
                             std::to_string(outside_root + 1) + " 1\n";
    return write_file(proc + "/gid_map", gmap);
  }
  // An unprivileged supervisor may map only its own ids (as the namespace's root, which sets up
  // the mounts and then drops every capability), and must give up setgroups first.
  if (auto err = write_file(proc + "/setgroups", "deny"); !err.empty()) return err;
  if (auto err = write_file(proc + "/uid_map", "0 " + std::to_string(geteuid()) + " 1\n"); !err.empty()) return err;
  return write_file(proc + "/gid_map", "0 " + std::to_string(getegid()) + " 1\n");
}

std::string probe_namespaces() {
  const long pid = syscall(SYS_clone, namespace_clone_flags() | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) return std::string("clone with namespaces: ") + std::strerror(errno);
  if (pid == 0) _exit(0);
  int status = 0;
  while (waitpid(static_cast<pid_t>(pid), &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "namespace probe child failed";
  return {};
}

}  // namespace distil::sandbox::detail
