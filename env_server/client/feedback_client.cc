#include "env_server/client/feedback_client.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>
#include <variant>

namespace distil::env {

using http::Method;
using http::Reply;
using http::TransportError;
using nlohmann::json;

namespace {

constexpr std::size_t kFallbackBatchItems = 64;  // when /v1/limits cannot be read

json item_to_json(const FeedbackItem& item) {
  json j = json::object();
  if (item.task) j["task"] = *item.task;
  else j["task_id"] = item.task_id;
  j["response"] = item.response;
  if (!item.options.is_null() && !(item.options.is_object() && item.options.empty())) j["options"] = item.options;
  return j;
}

// The distil-env error document {"error": {"code": ...}}, or null.
const json* distil_error(const json& j) {
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
      j["error"]["code"].is_string())
    return &j["error"];
  return nullptr;
}

// "HTTP 404 unknown_task: no task with id 'x' is loaded"
std::string describe_error(int status, const std::string& body) {
  std::string text = "HTTP " + std::to_string(status);
  const json j = json::parse(body, nullptr, false);
  if (const json* e = distil_error(j)) {
    text += " " + (*e)["code"].get<std::string>();
    if (e->contains("message") && (*e)["message"].is_string()) text += ": " + (*e)["message"].get<std::string>();
  } else if (!body.empty()) {
    text += ": " + http::one_line(body);
  }
  return text;
}

// An answer this endpoint gives whatever the request: the server is broken (5xx other than the
// overload 503), or it is not a distil-env server (any status with a body that is not our error
// document, e.g. a web server's 404 page). Worth trying another endpoint; not the item's fault.
bool endpoint_fault(int status, const std::string& body) {
  if (status == 200 || status == 429 || status == 503) return false;
  if (status >= 500) return true;
  return distil_error(json::parse(body, nullptr, false)) == nullptr;
}

std::string error_code_of(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
      j["error"]["code"].is_string())
    return j["error"]["code"].get<std::string>();
  return "";
}

}  // namespace

struct FeedbackClient::Impl {
  ClientConfig config;
  http::Endpoints endpoints;
  std::atomic<std::size_t> batch_limit{0};

  explicit Impl(ClientConfig c) : config(std::move(c)), endpoints(endpoints_config(config)) {
    if (config.max_concurrent_requests == 0) config.max_concurrent_requests = 4 * endpoints.size();
  }

  static http::EndpointsConfig endpoints_config(const ClientConfig& c) {
    http::EndpointsConfig e;
    e.field = "env.endpoints";
    e.urls = c.endpoints;
    e.policy = c.policy;
    e.request_timeout_s = c.request_timeout_s;
    e.max_attempts = c.max_attempts;
    e.overload_wait_s = c.overload_wait_s;
    e.backoff_initial_s = c.backoff_initial_s;
    e.backoff_max_s = c.backoff_max_s;
    e.auth_token = c.auth_token;
    e.health_path = "/readyz";
    e.probe_interval_s = c.probe_interval_s;
    e.probe_timeout_s = c.probe_timeout_s;
    e.user_agent = "distil-env-client";
    e.endpoint_fault = endpoint_fault;
    e.describe = describe_error;
    e.log = c.log;
    return e;
  }

  // The largest batch to send: the server's max_batch_items, and no more than its grading queue
  // holds (a batch is admitted whole or refused with 429, so a bigger one would never get in).
  std::size_t current_batch_limit() {
    if (auto limit = batch_limit.load()) return limit;
    for (std::size_t e = 0; e < endpoints.size(); ++e) {
      auto outcome = endpoints.exchange(e, Method::get, "/v1/limits", "");
      if (auto* reply = std::get_if<Reply>(&outcome); reply && reply->status == 200) {
        const json j = json::parse(reply->body, nullptr, false);
        if (j.is_object() && j.contains("max_batch_items") && j["max_batch_items"].is_number_unsigned() &&
            j["max_batch_items"].get<std::size_t>() > 0) {
          std::size_t limit = j["max_batch_items"].get<std::size_t>();
          if (j.contains("queue_capacity") && j["queue_capacity"].is_number_unsigned() &&
              j["queue_capacity"].get<std::size_t>() > 0)
            limit = std::min(limit, j["queue_capacity"].get<std::size_t>());
          if (config.max_batch_items > 0) limit = std::min(limit, config.max_batch_items);
          batch_limit = limit;
          return batch_limit;
        }
      }
    }
    // Not cached: the next call asks again.
    return config.max_batch_items > 0 ? config.max_batch_items : kFallbackBatchItems;
  }

  // Grades items[begin, end) as one batch request (split further if the server says it is too
  // big); writes exactly one outcome per item into `out`.
  void process_piece(const std::vector<FeedbackItem>& items, std::size_t begin, std::size_t end,
                     std::vector<FeedbackOutcome>& out) {
    if (begin >= end) return;
    json request = {{"items", json::array()}};
    for (std::size_t i = begin; i < end; ++i) request["items"].push_back(item_to_json(items[i]));
    auto fail_all = [&](const std::string& why) {
      for (std::size_t i = begin; i < end; ++i) out[i] = FeedbackOutcome{false, json(), why};
    };
    std::string body;
    try {
      body = request.dump(-1, ' ', false, json::error_handler_t::strict);
    } catch (const json::exception& e) {
      // A response with invalid UTF-8: send the items one by one so only the bad one fails.
      if (end - begin == 1) return fail_all(std::string("cannot encode the item as JSON: ") + e.what());
      for (std::size_t i = begin; i < end; ++i) process_piece(items, i, i + 1, out);
      return;
    }

    auto outcome = endpoints.send(Method::post, "/v1/feedback:batch", body, /*expect_object=*/true);
    if (auto* error = std::get_if<TransportError>(&outcome)) return fail_all(error->message);
    auto& reply = std::get<Reply>(outcome);
    const std::string code = error_code_of(reply.body);
    if ((reply.status == 413 || (reply.status == 422 && code == "batch_too_large")) && end - begin > 1) {
      const json j = json::parse(reply.body, nullptr, false);
      std::size_t limit = (end - begin) / 2;
      if (j.is_object() && j.contains("error") && j["error"].contains("limit") &&
          j["error"]["limit"].is_number_unsigned() && reply.status == 422)
        limit = std::max<std::size_t>(1, j["error"]["limit"].get<std::size_t>());
      if (reply.status == 422) batch_limit = limit;
      for (std::size_t piece = begin; piece < end; piece += limit)
        process_piece(items, piece, std::min(end, piece + limit), out);
      return;
    }
    if (reply.status != 200) return fail_all(describe_error(reply.status, reply.body));
    const json parsed = json::parse(reply.body, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("results") || !parsed["results"].is_array() ||
        parsed["results"].size() != end - begin)
      return fail_all("the server's batch answer does not hold exactly " + std::to_string(end - begin) + " results");
    for (std::size_t i = begin; i < end; ++i) {
      const json& result = parsed["results"][i - begin];
      if (result.is_object() && result.contains("error")) {
        out[i] = FeedbackOutcome{false, json(), describe_error(result["error"].value("status", 0), dump_error(result))};
      } else {
        out[i] = FeedbackOutcome{true, result, ""};
      }
    }
  }

  static std::string dump_error(const json& result) { return result.dump(); }
};

FeedbackClient::FeedbackClient(ClientConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
FeedbackClient::~FeedbackClient() = default;

std::vector<FeedbackOutcome> FeedbackClient::feedback(const std::vector<FeedbackItem>& items) {
  std::vector<FeedbackOutcome> out(items.size());
  if (items.empty()) return out;
  const std::size_t limit = impl_->current_batch_limit();
  std::vector<std::pair<std::size_t, std::size_t>> pieces;
  for (std::size_t begin = 0; begin < items.size(); begin += limit)
    pieces.emplace_back(begin, std::min(items.size(), begin + limit));

  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t p = next++; p < pieces.size(); p = next++) {
      try {
        impl_->process_piece(items, pieces[p].first, pieces[p].second, out);
      } catch (const std::exception& e) {
        for (std::size_t i = pieces[p].first; i < pieces[p].second; ++i)
          out[i] = FeedbackOutcome{false, json(), std::string("client error: ") + e.what()};
      }
    }
  };
  const std::size_t threads = std::min(pieces.size(), impl_->config.max_concurrent_requests);
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  return out;
}

FeedbackOutcome FeedbackClient::feedback_one(const FeedbackItem& item) {
  std::string body;
  try {
    body = item_to_json(item).dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::exception& e) {
    return {false, json(), std::string("cannot encode the item as JSON: ") + e.what()};
  }
  auto outcome = impl_->endpoints.send(Method::post, "/v1/feedback", body);
  if (auto* error = std::get_if<TransportError>(&outcome)) return {false, json(), error->message};
  auto& reply = std::get<Reply>(outcome);
  if (reply.status != 200) return {false, json(), describe_error(reply.status, reply.body)};
  json result = json::parse(reply.body, nullptr, false);
  if (!result.is_object()) return {false, json(), "the server's answer is not a JSON object"};
  return {true, std::move(result), ""};
}

json FeedbackClient::get_json(const std::string& path) {
  auto outcome = impl_->endpoints.send(Method::get, path, "");
  if (auto* error = std::get_if<TransportError>(&outcome)) throw std::runtime_error("GET " + path + ": " + error->message);
  auto& reply = std::get<Reply>(outcome);
  if (reply.status != 200) throw std::runtime_error("GET " + path + ": " + describe_error(reply.status, reply.body));
  json j = json::parse(reply.body, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("GET " + path + ": the answer is not JSON");
  return j;
}

std::vector<EndpointStats> FeedbackClient::endpoint_stats() const { return impl_->endpoints.stats(); }

std::vector<EndpointCheck> FeedbackClient::check_endpoints() {
  std::vector<EndpointCheck> checks;
  auto& endpoints = impl_->endpoints;
  for (std::size_t e = 0; e < endpoints.size(); ++e) {
    EndpointCheck c;
    c.endpoint = endpoints.base(e);
    auto health = endpoints.exchange(e, Method::get, "/healthz", "", impl_->config.probe_timeout_s, false);
    if (auto* error = std::get_if<TransportError>(&health)) {
      c.problem = "GET /healthz: " + error->message;
    } else {
      c.reachable = true;
      const Reply& reply = std::get<Reply>(health);
      const json body = json::parse(reply.body, nullptr, false);
      if (reply.status != 200 || !body.is_object() || body.value("status", "") != "ok") {
        c.problem = "GET /healthz: " + describe_error(reply.status, reply.body) + " (a distil-env server answers 200 {\"status\":\"ok\"})";
      } else {
        auto limits = endpoints.exchange(e, Method::get, "/v1/limits", "", impl_->config.probe_timeout_s, false);
        if (auto* error = std::get_if<TransportError>(&limits)) {
          c.problem = "GET /v1/limits: " + error->message;
        } else {
          const Reply& l = std::get<Reply>(limits);
          const json j = json::parse(l.body, nullptr, false);
          if (l.status == 401) c.problem = "GET /v1/limits: HTTP 401: the server needs a bearer token (env.auth_token_env)";
          else if (l.status != 200 || !j.is_object() || !j.contains("max_batch_items"))
            c.problem = "GET /v1/limits: " + describe_error(l.status, l.body) + " (no max_batch_items: not a distil-env server)";
          else c.distil = true;
        }
      }
    }
    if (!c.distil) endpoints.mark_down(e, c.problem);
    checks.push_back(std::move(c));
  }
  return checks;
}

void FeedbackClient::require_endpoints() {
  const auto checks = check_endpoints();
  std::string wrong, unreachable;
  bool any_good = false;
  for (const auto& c : checks) {
    any_good |= c.distil;
    if (c.distil) continue;
    (c.reachable ? wrong : unreachable) += "\n  " + c.endpoint + ": " + c.problem;
  }
  if (!wrong.empty())
    throw std::runtime_error("env.endpoints: these answer but are not distil-env feedback servers:" + wrong +
                             (unreachable.empty() ? "" : "\nand these do not answer:" + unreachable));
  if (!any_good) throw std::runtime_error("env.endpoints: no endpoint answers:" + unreachable);
}

}  // namespace distil::env
