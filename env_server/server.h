// The feedback HTTP/1.1 server (DESIGN.md "Env server API"): asynchronous I/O threads (Boost.Beast)
// in front of a bounded grading worker pool.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "env_server/request_limits.h"
#include "env_server/run_code.h"
#include "env_server/task_store.h"
#include "graders/grader.h"
#include "sandbox/sandbox.h"

namespace distil::env {

struct ServerConfig {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;        // 0: the kernel picks a free port; start() returns it
  std::size_t io_threads = 0;       // 0: one per hardware thread
  std::size_t workers = 0;          // grading threads; 0: one per hardware thread
  std::size_t queue_capacity = 1024;  // grading jobs (batch items) waiting; beyond it: 429
  // A request whose jobs would likely wait longer than this for a worker (queued jobs times the
  // recent mean grading time, over the workers) gets 429 with Retry-After at once, well before a
  // client's timeout (the client's default is 120 s); 0: only queue_capacity bounds the wait.
  double max_queue_wait_s = 10.0;
  RequestLimits limits;
  double request_deadline_s = 120.0;  // queueing + grading; then 503 (or per-item errors in a batch)
  double read_timeout_s = 10.0;       // a started request must arrive completely within this
  double idle_timeout_s = 60.0;       // keep-alive connection with no request
  double write_timeout_s = 30.0;
  double retry_after_s = 1.0;         // the Retry-After of a 429
  std::string auth_token;             // non-empty: every route but /healthz and /readyz needs it
  std::FILE* access_log = stderr;     // one JSON line per request; nullptr: no access log
  graders::GradeOptions default_options;
  RunCodeLimits run_code;             // POST /run_code (SandboxFusion's route)
};

nlohmann::json to_json(const ServerConfig& c);  // what GET /v1/limits reports

class Server {
 public:
  // `registry` and `sandbox` must outlive the server; `sandbox` may be null (then /readyz fails
  // and only graders that never run code work).
  Server(ServerConfig config, TaskStore tasks, const graders::Registry& registry, sandbox::Sandbox* sandbox);
  ~Server();  // stops immediately if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Runs the sandbox self-test (for /readyz), binds, listens, starts the threads. Returns the
  // port. Throws std::runtime_error when the address cannot be bound.
  std::uint16_t start();

  // Graceful stop, from any thread: no new connections; idle keep-alive connections are closed;
  // requests in flight are answered (with "Connection: close"). Returns at once.
  void request_stop();

  // After request_stop(): waits until every connection has finished, at most `drain_timeout_s`,
  // then stops the threads. True when everything in flight was answered in time.
  bool wait_stopped(double drain_timeout_s);

  bool ready() const;                 // the sandbox self-test passed and the server is not stopping
  nlohmann::json readiness() const;   // the /readyz document
  std::uint16_t port() const;

  struct Impl;  // opaque; named here so the connection class in server.cc can refer to it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace distil::env
