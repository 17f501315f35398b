// Client of the feedback service, used by the trainer: several endpoints, retries, failover,
// and exactly one outcome per submitted item.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "env_server/client/http_endpoints.h"

namespace distil::env {

using http::EndpointPolicy;
using http::EndpointStats;

struct ClientConfig {
  std::vector<std::string> endpoints;  // "http://host:port" (base URL, no path)
  EndpointPolicy policy = EndpointPolicy::round_robin;
  double request_timeout_s = 120.0;
  // Per batch piece, across endpoints: attempts that got no usable answer (no connection, a
  // timeout, a 5xx, an answer that is not a distil server's). Overload answers (429, 503) do not
  // count: they are waited out, honouring Retry-After, for up to overload_wait_s in all.
  int max_attempts = 6;
  double overload_wait_s = 120.0;
  double backoff_initial_s = 0.05;
  double backoff_max_s = 2.0;
  std::size_t max_batch_items = 0;  // 0: ask the server (GET /v1/limits or the 422 message)
  std::string auth_token;           // bearer token, empty: none
  std::size_t max_concurrent_requests = 0;  // batch pieces in flight at once; 0: 4 per endpoint
  // An endpoint that failed is marked down and avoided while a background thread probes its
  // /readyz every probe_interval_s (each probe waits at most probe_timeout_s); work goes to
  // healthy endpoints first, and to a down one only when none is healthy.
  double probe_interval_s = 0.5;
  double probe_timeout_s = 2.0;
  // One line per event (an endpoint going down, with why, or coming back); default: stderr.
  std::function<void(const std::string&)> log;
};

// What an endpoint answered at start-up (FeedbackClient::check_endpoints).
struct EndpointCheck {
  std::string endpoint;
  bool reachable = false;    // some HTTP answer came
  bool distil = false;       // /healthz and /v1/limits answered as a distil-env server does
  std::string problem;       // one line, when !distil
};

struct FeedbackItem {
  std::string task_id;                  // either task_id ...
  std::optional<nlohmann::json> task;   // ... or an inline task record
  std::string response;
  nlohmann::json options = nlohmann::json::object();
};

// Exactly one per submitted item, in order.
struct FeedbackOutcome {
  bool ok = false;
  nlohmann::json result;  // the server's result object when ok
  std::string error;      // why not, when !ok (after retries and failover)
};

class FeedbackClient {
 public:
  explicit FeedbackClient(ClientConfig config);
  ~FeedbackClient();
  FeedbackClient(const FeedbackClient&) = delete;
  FeedbackClient& operator=(const FeedbackClient&) = delete;

  // Thread-safe. Splits into server-sized batches, sends them concurrently across endpoints.
  std::vector<FeedbackOutcome> feedback(const std::vector<FeedbackItem>& items);
  FeedbackOutcome feedback_one(const FeedbackItem& item);

  // GET a JSON document (e.g. "/v1/tasks") from the first healthy endpoint; throws on failure.
  nlohmann::json get_json(const std::string& path);

  // GET /healthz and /v1/limits of every endpoint, once. Endpoints that do not answer start
  // marked down (probed in the background).
  std::vector<EndpointCheck> check_endpoints();
  // check_endpoints(), then throws std::runtime_error naming each bad endpoint if any endpoint
  // answers but is not a distil-env server (a wrong URL: a configuration error), or if none
  // answers at all. Unreachable endpoints beside a good one are logged and left to the prober.
  void require_endpoints();

  // Per endpoint, since the client was made: work requests sent (probes not counted), those
  // that got no usable answer, and whether it is marked down now.
  std::vector<EndpointStats> endpoint_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distil::env
