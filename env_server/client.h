// Client of the feedback service, used by the trainer: several endpoints, retries, failover,
// and exactly one outcome per submitted item.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::env {

enum class EndpointPolicy { round_robin, least_loaded };

struct ClientConfig {
  std::vector<std::string> endpoints;  // "http://host:port" (base URL, no path)
  EndpointPolicy policy = EndpointPolicy::round_robin;
  double request_timeout_s = 120.0;
  int max_attempts = 6;            // per batch piece, across endpoints
  double backoff_initial_s = 0.05;
  double backoff_max_s = 2.0;
  std::size_t max_batch_items = 0;  // 0: ask the server (GET /v1/limits or the 422 message)
  std::string auth_token;           // bearer token, empty: none
  std::size_t max_concurrent_requests = 0;  // batch pieces in flight at once; 0: 4 per endpoint
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distil::env
