// Supervisor side of the Python fork server (see fork_server_boot.h): one sandboxed interpreter
// per batch, one forked child per input. The supervisor owns each child's stdin/stdout/stderr
// pipes (sent over the control socket), so output capping and verdicts are the one-shot code.
#pragma once

#include <memory>
#include <string>

#include "sandbox/cgroup.h"

#include "sandbox/sandbox.h"
#include "sandbox/supervisor.h"
#include "sandbox/unique_fd.h"

namespace distil::sandbox::detail {

class ForkServer {
 public:
  // `process` has exec'd the interpreter with the boot script; `control` is our end of the
  // SOCK_SEQPACKET pair whose other end is the server's fd 3.
  ForkServer(ChildProcess process, UniqueFd control, const Limits& limits, std::unique_ptr<RunCgroup> cgroup);
  ~ForkServer();
  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;

  // One input in a fresh child. After a failure of the server itself (not of the program),
  // alive() turns false and the result is sandbox_error.
  RunResult run(const std::string& stdin_data);
  bool alive() const { return alive_; }

  // A warm server (fork_server_boot.h, --warm) serves many batches. begin_batch: the next
  // batch's program is in its /box already; sets its cgroup's limits (`cgroup_bytes`,
  // `cgroup_pids`) and sends the limits; false when the server is gone. end_batch: asks the
  // server to retire what it forked ahead and to clean up, and waits for its acknowledgement;
  // false (the server is then shut down) when it does not come within `timeout_s`.
  bool begin_batch(const Limits& limits, std::size_t cgroup_bytes, int cgroup_pids);
  bool end_batch(double timeout_s);
  // The server process has ended (killed, or its parent thread exited), without asking it.
  bool exited() const;

 private:
  void shut_down();
  std::string server_stderr();
  ChildProcess process_;
  UniqueFd control_;
  Limits limits_;
  std::unique_ptr<RunCgroup> cgroup_;  // may be null
  bool alive_ = true;
};

}  // namespace distil::sandbox::detail
