// The seccomp-bpf policies, built with libseccomp in the supervisor and exported as raw BPF so
// the child (after clone, where allocating is unsafe) or the fork server can load them with one
// syscall. The lists and the reasons for them are in docs/sandbox.md.
#pragma once

#include <linux/filter.h>

#include <cstdint>

#include <string>
#include <vector>

namespace distil::sandbox::detail {

enum class SeccompPolicy {
  // User code: allowlist suited to CPython and to compiled C++ programs; everything not listed
  // kills the process (verdict syscall_denied); sockets and privilege changes fail with EPERM
  // so the program sees an ordinary error it can report.
  user_program,
  // The fork server and the compiler: everything allowed except the kernel-attack surface
  // (ptrace, bpf, keyctl, modules, mount/unshare/setns after setup, perf, userfaultfd...).
  // The fork server's children add user_program on top before user code runs.
  supervisor,
};

enum class ExecRule {
  allow,         // execve/execveat allowed (compiler driver runs cc1, as, ld)
  notify,        // SECCOMP_RET_USER_NOTIF: the supervisor allows the first one, denies the rest
  deny,          // EPERM
};

struct SeccompProgram {
  std::vector<sock_filter> instructions;
  sock_fprog fprog() const {
    return sock_fprog{static_cast<unsigned short>(instructions.size()),
                      const_cast<sock_filter*>(instructions.data())};
  }
};

// What a denied system call (the user policy's default and its kernel-attack-surface list; the
// supervisor policy's list) does.
enum class DeniedAction {
  kill,    // SECCOMP_RET_KILL_PROCESS: the process dies of SIGSYS (nobody learns which call)
  // SECCOMP_RET_USER_NOTIF: the call blocks and its listener (the supervisor for one-shot runs,
  // the fork server for its children) records the number and kills the run, so the verdict can
  // name the call. Where no listener is attached the call fails with ENOSYS instead.
  notify,
};

// Whether the kernel has SECCOMP_RET_KILL_PROCESS (Linux 4.14+). Without it every kill in the
// policies (denied calls, other architectures' ABIs) falls back to killing the calling thread
// only, and the sandbox says so in its isolation report.
bool seccomp_kill_process_available();
// SCMP_ACT_KILL_PROCESS, or SCMP_ACT_KILL (the thread) where the kernel lacks it.
uint32_t kill_action();

// Throws std::runtime_error naming the libseccomp call that failed.
SeccompProgram build_seccomp_program(SeccompPolicy policy, ExecRule exec_rule, DeniedAction denied = DeniedAction::kill);

// "system call 'ptrace' (101) is not allowed": the verdict message for a denied call reported by a
// user notification (`arch` is the AUDIT_ARCH_* value of seccomp_data).
std::string denied_syscall_message(std::uint32_t arch, int nr);
// execve or execveat of the native ABI (the only calls the user policy notifies that may go on).
bool is_exec_syscall(std::uint32_t arch, int nr);

}  // namespace distil::sandbox::detail
