// `distil-env serve`: loads tasks, probes the sandbox, serves until SIGTERM/SIGINT, drains.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "env_server/cli.h"
#include "env_server/server.h"

namespace distil::env {
namespace {

struct ServeOptions {
  std::vector<std::string> task_files;
  ServerConfig server;
  std::string auth_token_file;
  std::string access_log = "-";
  std::string min_isolation = "basic";
  bool no_sandbox = false;
  int warm_fork_servers = sandbox::Config{}.warm_fork_servers;
  double drain_timeout_s = 30.0;
};

std::string read_token(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("--auth-token-file '" + path + "': cannot be read");
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string token = buffer.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' || token.back() == '\t'))
    token.pop_back();
  if (token.empty()) throw std::runtime_error("--auth-token-file '" + path + "': the file is empty");
  for (unsigned char c : token)
    if (c < 0x21 || c > 0x7e)
      throw std::runtime_error("--auth-token-file '" + path + "': the token must be printable ASCII without spaces");
  return token;
}

int serve(ServeOptions& options) {
  if (!options.auth_token_file.empty()) options.server.auth_token = read_token(options.auth_token_file);
  // One flag bounds both of /run_code's timeouts (verl sends the same value for both).
  options.server.run_code.max_compile_timeout_s = options.server.run_code.max_run_timeout_s;

  std::FILE* log = nullptr;
  if (options.access_log == "-") log = stderr;
  else if (options.access_log != "off") {
    log = std::fopen(options.access_log.c_str(), "a");
    if (!log) throw std::runtime_error("--access-log '" + options.access_log + "': cannot be opened for appending");
  }
  options.server.access_log = log;

  TaskStore tasks = TaskStore::from_files(options.task_files);

  std::unique_ptr<sandbox::Sandbox> sandbox;
  if (!options.no_sandbox) {
    sandbox::Config config;
    if (options.min_isolation == "basic") config.minimum = sandbox::MinimumIsolation::basic;
    else if (options.min_isolation == "namespaces") config.minimum = sandbox::MinimumIsolation::namespaces;
    else config.minimum = sandbox::MinimumIsolation::full;
    config.warm_fork_servers = options.warm_fork_servers;
    sandbox = std::make_unique<sandbox::Sandbox>(config);
  }

  Server server(options.server, std::move(tasks), graders::Registry::builtin(), sandbox.get());

  // Signals are waited for on their own io_context, before any thread starts, so the server's
  // threads never see them.
  boost::asio::io_context signal_context;
  boost::asio::signal_set signals(signal_context, SIGINT, SIGTERM);
  int received = 0;
  signals.async_wait([&](const boost::system::error_code& ec, int signal_number) {
    if (!ec) received = signal_number;
  });

  const auto port = server.start();
  const auto readiness = server.readiness();
  std::printf("distil-env: listening on http://%s:%u (%zu tasks, %zu workers, sandbox self-test %s)\n",
              options.server.host.c_str(), static_cast<unsigned>(port), readiness.value("tasks", std::size_t{0}),
              readiness.value("workers", std::size_t{0}), server.ready() ? "passed" : "FAILED: /readyz answers 503");
  std::fflush(stdout);

  signal_context.run();  // until SIGINT or SIGTERM
  std::fprintf(stderr, "distil-env: signal %d: draining (at most %.1f s)\n", received, options.drain_timeout_s);
  server.request_stop();
  const bool drained = server.wait_stopped(options.drain_timeout_s);
  std::fprintf(stderr, "distil-env: %s\n",
               drained ? "drained, exiting" : "drain deadline passed; unfinished connections were closed");
  if (log && log != stderr) std::fclose(log);
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "Serve the feedback API over HTTP/1.1");
  cmd->add_option("--tasks", options->task_files, "Task files (JSONL), one or more")->required()->check(CLI::ExistingFile);
  cmd->add_option("--host", options->server.host, "Address to bind")->capture_default_str();
  cmd->add_option("--port", options->server.port, "Port (0: pick a free one and print it)")->capture_default_str();
  cmd->add_option("--workers", options->server.workers, "Grading threads (0: one per CPU)")->capture_default_str();
  cmd->add_option("--io-threads", options->server.io_threads, "HTTP I/O threads (0: one per CPU)")->capture_default_str();
  cmd->add_option("--queue-capacity", options->server.queue_capacity, "Grading jobs that may wait; beyond: 429")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-queue-wait", options->server.max_queue_wait_s,
                  "Seconds a request's jobs may be expected to wait for a worker; beyond: 429 (0: no bound)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--warm-fork-servers", options->warm_fork_servers,
                  "Python fork servers kept warm between code gradings (0: one per grading; keep >= --workers)")
      ->capture_default_str()->check(CLI::Range(0, 64));
  cmd->add_option("--auth-token-file", options->auth_token_file, "File holding the bearer token clients must send");
  cmd->add_option("--run-code-max-timeout", options->server.run_code.max_run_timeout_s,
                  "POST /run_code: the largest run_timeout and compile_timeout (CPU seconds); larger ones are lowered")
      ->capture_default_str()->check(CLI::Range(0.001, 3600.0));
  cmd->add_option("--run-code-default-memory-mb", options->server.run_code.default_memory_mb,
                  "POST /run_code: the memory limit when memory_limit_MB is -1 (SandboxFusion: none)")
      ->capture_default_str()->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--run-code-max-memory-mb", options->server.run_code.max_memory_mb,
                  "POST /run_code: the largest memory_limit_MB; larger ones are lowered")
      ->capture_default_str()->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--access-log", options->access_log, "Where JSON request logs go: '-' (stderr), a file, or 'off'")
      ->capture_default_str();
  cmd->add_option("--request-deadline", options->server.request_deadline_s, "Seconds a request may take")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--read-timeout", options->server.read_timeout_s, "Seconds a started request may take to arrive")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--idle-timeout", options->server.idle_timeout_s, "Seconds an idle keep-alive connection stays open")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--drain-timeout", options->drain_timeout_s, "Seconds to finish in-flight requests after SIGTERM")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-body-bytes", options->server.limits.max_body_bytes)->capture_default_str();
  cmd->add_option("--max-batch-items", options->server.limits.max_batch_items)->capture_default_str();
  cmd->add_option("--max-json-depth", options->server.limits.max_json_depth)->capture_default_str();
  cmd->add_option("--max-string-bytes", options->server.limits.max_string_bytes)->capture_default_str();
  cmd->add_option("--max-header-bytes", options->server.limits.max_header_bytes)->capture_default_str();
  cmd->add_option("--min-isolation", options->min_isolation, "Refuse to start below: basic, namespaces, full")
      ->capture_default_str()->check(CLI::IsMember({"basic", "namespaces", "full"}));
  cmd->add_flag("--no-sandbox", options->no_sandbox, "Run without a sandbox (math/science only; /readyz fails)");
  cmd->callback([options, &exit_code] {
    try {
      exit_code = serve(*options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "distil-env serve: %s\n", e.what());
      exit_code = 1;
    }
  });
}

}  // namespace distil::env
