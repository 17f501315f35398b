// Linux namespaces for a sandboxed child: user (uid/gid mapped to an unprivileged outside id),
// PID (the child is init: when it dies the kernel kills every process it left), mount (private
// root, see root_fs.h), network (only an unconfigured loopback), IPC and UTS.
#pragma once

#include <sys/types.h>

#include <string>

namespace distil::sandbox::detail {

inline constexpr int kSandboxUid = 1000;  // the id user code runs as inside the namespace
inline constexpr int kSandboxGid = 1000;

int namespace_clone_flags();

// Maps inside uid/gid 0 to outside `outside_root` and inside 1000 to `outside_root + 1`.
// Written by the supervisor (which holds CAP_SETUID/CAP_SETGID on the host) or, when it is not
// privileged, inside 0 to its own uid only (the child then drops all capabilities instead of
// changing uid). Returns an empty string or the error.
std::string write_id_maps(pid_t child, unsigned outside_root, bool privileged);

// Forks a throwaway child into all the namespaces and reports whether the kernel allowed it
// (containers often forbid user namespaces). Empty string: available.
std::string probe_namespaces();

}  // namespace distil::sandbox::detail
