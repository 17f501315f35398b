// HTTP/1.1 to a set of interchangeable endpoints: pooled keep-alive connections, retries with
// jittered backoff, failover, 429/503 back-pressure waited out, and a background prober that
// brings failed endpoints back. The feedback client and the remote teachers both stand on it, so
// there is one HTTP client in the codebase.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace distil::http {

enum class EndpointPolicy { round_robin, least_loaded };
enum class Method { get, post };

struct Reply {
  int status = 0;
  std::string body;
  double retry_after_s = 0.0;  // from Retry-After, 0 if absent
};

// Why a request got no HTTP answer.
struct TransportError {
  std::string message;
  bool connect_failed = false;
};

using Outcome = std::variant<Reply, TransportError>;

struct EndpointsConfig {
  std::string field = "endpoints";  // the configuration key named in errors about the URLs
  std::vector<std::string> urls;    // base URLs: "http://host:port", "http://[::1]:8000"
  bool allow_path = false;          // URLs may carry a path prefix ("http://host/teacher")
  EndpointPolicy policy = EndpointPolicy::round_robin;
  double request_timeout_s = 120.0;
  // Per request, across endpoints: attempts that got no usable answer (no connection, a timeout,
  // an endpoint fault). Overload answers (429, 503) do not count: they are waited out, honouring
  // Retry-After, for up to overload_wait_s in all.
  int max_attempts = 6;
  double overload_wait_s = 120.0;
  double backoff_initial_s = 0.05;
  double backoff_max_s = 2.0;
  std::string auth_token;  // bearer token, empty: none
  // A failed endpoint is avoided while the prober GETs health_path every probe_interval_s (each
  // probe waits at most probe_timeout_s); it is used again once that answers 200.
  std::string health_path = "/readyz";
  bool health_any_answer = false;  // a server without a health route: any answer below 500 is up
  double probe_interval_s = 0.5;
  double probe_timeout_s = 2.0;
  std::string user_agent = "distil-client";
  // Whether an answer other than 200/429/503 is the endpoint's fault (worth another endpoint)
  // rather than the request's. Default: any 5xx.
  std::function<bool(int status, const std::string& body)> endpoint_fault;
  // The error text of an answer ("HTTP 404: ..."). Default: status and the body's first line.
  std::function<std::string(int status, const std::string& body)> describe;
  // One line per event (an endpoint going down, with why, or coming back); default: stderr.
  std::function<void(const std::string&)> log;
};

struct EndpointStats {
  std::string endpoint;
  std::int64_t requests = 0;  // work requests sent (probes not counted)
  std::int64_t failures = 0;  // of those, how many got no usable answer
  bool down = false;          // marked down now
};

class Endpoints {
 public:
  // Throws std::invalid_argument naming config.field for a bad URL or setting.
  explicit Endpoints(EndpointsConfig config);
  ~Endpoints();
  Endpoints(const Endpoints&) = delete;
  Endpoints& operator=(const Endpoints&) = delete;

  // Thread-safe. With retries, backoff and failover: the first usable answer (200, or an answer
  // the request itself caused), the last overload answer once overload_wait_s is spent, or a
  // TransportError once max_attempts exchanges got no usable answer. `target` is appended to
  // the endpoint's base URL path. expect_object: a 200 whose body is not a JSON object is a
  // fault of the endpoint too.
  Outcome send(Method method, const std::string& target, const std::string& body, bool expect_object = false);

  // One exchange with endpoint `index`, no retry. timeout_s 0: request_timeout_s. pooled: reuse
  // and keep keep-alive connections.
  Outcome exchange(std::size_t index, Method method, const std::string& target, const std::string& body,
                   double timeout_s = 0, bool pooled = true);

  std::size_t size() const;
  const std::string& base(std::size_t index) const;  // "http://host:port/path"
  bool down(std::size_t index) const;
  void mark_down(std::size_t index, const std::string& why);
  std::vector<EndpointStats> stats() const;
  const EndpointsConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A body that is not the expected JSON (an HTML error page, a proxy's text) as one short line:
// tags dropped, whitespace collapsed, at most 120 characters.
std::string one_line(const std::string& body);

}  // namespace distil::http
