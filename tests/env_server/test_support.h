// Helpers for the env-server tests: raw HTTP exchanges (for requests the real client would never
// send), the shared sandbox, and starting the real `distil-env` binary as a child process.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "sandbox/sandbox.h"

namespace distil::env::testing {

inline std::string tasks_file() { return std::string(DISTIL_SOURCE_DIR) + "/tests/env_server/data/tasks.jsonl"; }
inline std::string env_binary() { return std::string(DISTIL_BINARY_DIR) + "/env_server/distil-env"; }

inline const std::string kMathRight = "6 * 7 = 42, so the answer is \\boxed{42}.";
inline const std::string kMathWrong = "I think it is \\boxed{41}.";
inline const std::string kCodeRight =
    "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```";
inline const std::string kCodeWrong = "```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a - b)\n```";

// The sandbox shared by the tests, or null with the reason when this host cannot make one.
struct SharedSandbox {
  std::unique_ptr<sandbox::Sandbox> sandbox;
  std::string why_not;
};
inline SharedSandbox& shared_sandbox() {
  static SharedSandbox shared = [] {
    SharedSandbox s;
    try {
      s.sandbox = std::make_unique<sandbox::Sandbox>();
    } catch (const std::exception& e) {
      s.why_not = e.what();
    }
    return s;
  }();
  return shared;
}

struct RawResponse {
  int status = 0;  // 0: no HTTP answer (see error)
  std::string body;
  std::map<std::string, std::string> headers;
  bool keep_alive = false;
  std::string error;
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

// A client connection that sends exact bytes and parses what comes back, with a timeout.
class RawConnection {
 public:
  explicit RawConnection(std::uint16_t port) : stream_(ioc_) {
    boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address("127.0.0.1"), port);
    stream_.expires_after(std::chrono::seconds(10));
    boost::beast::error_code ec;
    stream_.async_connect(ep, [&](boost::beast::error_code e) { ec = e; });
    run();
    if (ec) error_ = ec.message();
  }
  bool connected() const { return error_.empty(); }

  bool send(const std::string& bytes, double timeout_s = 10) {
    boost::beast::error_code ec;
    stream_.expires_after(std::chrono::milliseconds(static_cast<int>(timeout_s * 1000)));
    boost::asio::async_write(stream_, boost::asio::buffer(bytes), [&](boost::beast::error_code e, std::size_t) { ec = e; });
    run();
    return !ec;
  }

  RawResponse read(double timeout_s = 30) {
    RawResponse r;
    boost::beast::http::response_parser<boost::beast::http::string_body> parser;
    parser.body_limit(1ull << 30);
    boost::beast::error_code ec;
    stream_.expires_after(std::chrono::milliseconds(static_cast<int>(timeout_s * 1000)));
    boost::beast::http::async_read(stream_, buffer_, parser, [&](boost::beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec) {
      r.error = ec.message();
      return r;
    }
    auto res = parser.release();
    r.status = static_cast<int>(res.result_int());
    r.body = res.body();
    r.keep_alive = res.keep_alive();
    for (const auto& field : res) r.headers[std::string(field.name_string())] = std::string(field.value());
    return r;
  }

  // True if the server closed the connection within `timeout_s` (read returns EOF/reset).
  bool closed_by_peer(double timeout_s) {
    char byte;
    boost::beast::error_code ec;
    stream_.expires_after(std::chrono::milliseconds(static_cast<int>(timeout_s * 1000)));
    stream_.async_read_some(boost::asio::buffer(&byte, 1), [&](boost::beast::error_code e, std::size_t) { ec = e; });
    run();
    return ec && ec != boost::beast::error::timeout;
  }

 private:
  void run() {
    ioc_.restart();
    ioc_.run();
  }
  boost::asio::io_context ioc_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::string error_;
};

inline std::string http_request(const std::string& method, const std::string& target, const std::string& body = "",
                                const std::vector<std::string>& extra_headers = {}, bool keep_alive = false) {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& h : extra_headers) r += h + "\r\n";
  if (!body.empty() || method == "POST") {
    r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  if (!keep_alive) r += "Connection: close\r\n";
  return r + "\r\n" + body;
}

inline RawResponse call(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body = "", const std::vector<std::string>& headers = {}) {
  RawConnection c(port);
  if (!c.connected()) return RawResponse{0, "", {}, false, "connect failed"};
  c.send(http_request(method, target, body, headers));
  return c.read();
}

// `distil-env serve ...` as a child process; its "listening on" line gives the port.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args) {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the test, however the test ends
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      std::string binary = env_binary();
      argv.push_back(binary.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
    char line[512];
    while (stdout_ && std::fgets(line, sizeof line, stdout_)) {
      std::string text(line);
      const auto at = text.find("listening on http://");
      if (at == std::string::npos) continue;
      const auto colon = text.find(':', at + 20);
      port_ = static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1)));
      break;
    }
  }
  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_) std::fclose(stdout_);
  }
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }

  // Sends SIGTERM and waits for the exit status (nullopt: still running after `timeout_s`).
  std::optional<int> terminate(double timeout_s) {
    kill(pid_, SIGTERM);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
    while (std::chrono::steady_clock::now() < give_up) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      usleep(10000);
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  std::FILE* stdout_ = nullptr;
  std::uint16_t port_ = 0;
  bool exited_ = false;
};

}  // namespace distil::env::testing
