#include "env_server/client/completions_client.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace distil::http {

using nlohmann::json;

namespace {

// "http://host:8000/v1" and "http://host:8000" name the same server: the OpenAI clients' base
// URL carries the /v1 that the routes below spell out.
std::string without_v1(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  const std::string suffix = "/v1";
  if (url.size() >= suffix.size() && url.compare(url.size() - suffix.size(), suffix.size(), suffix) == 0)
    url.resize(url.size() - suffix.size());
  return url;
}

EndpointsConfig prepared(EndpointsConfig e) {
  for (auto& url : e.urls) url = without_v1(url);
  e.allow_path = true;
  if (e.health_path.empty() || e.health_path == "/readyz") e.health_path = "/health";
  if (e.user_agent == "distil-client") e.user_agent = "distil-teacher";
  e.describe = [](int status, const std::string& body) {
    return "HTTP " + std::to_string(status) + ": " + openai_error_message(body);
  };
  // A 5xx, or an answer that is not OpenAI's JSON (a web server's 404 page: the wrong URL), is
  // the endpoint's fault; a JSON 4xx is the request's (too many log-probs asked, too long).
  e.endpoint_fault = [](int status, const std::string& body) {
    return status >= 500 || json::parse(body, nullptr, false).is_discarded();
  };
  return e;
}

}  // namespace

std::string openai_error_message(const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object()) {
    if (j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
        j["error"]["message"].is_string())
      return j["error"]["message"].get<std::string>();
    if (j.contains("message") && j["message"].is_string()) return j["message"].get<std::string>();
    if (j.contains("detail") && j["detail"].is_string()) return j["detail"].get<std::string>();
  }
  return one_line(body);
}

json completions_request(const std::string& model, const std::vector<std::int64_t>& sequence, int k) {
  // max_tokens 1: a completion must generate something; the one token is thrown away.
  // temperature 0 keeps the server's sampler from drawing random numbers for it.
  json request = {{"prompt", sequence}, {"max_tokens", 1}, {"temperature", 0}, {"prompt_logprobs", k},
                  {"add_special_tokens", false}};
  if (!model.empty()) request["model"] = model;
  return request;
}

std::vector<TopKRow> parse_prompt_logprobs(const json& reply, std::size_t sequence_length, std::size_t from, int k) {
  auto fail = [](const std::string& field, const std::string& problem) {
    throw std::runtime_error("completions reply: " + field + ": " + problem);
  };
  if (!reply.is_object()) fail("<root>", "expected an object");
  if (!reply.contains("choices") || !reply["choices"].is_array() || reply["choices"].empty())
    fail("choices", "missing or empty");
  const json& choice = reply["choices"][0];
  if (!choice.is_object() || !choice.contains("prompt_logprobs") || !choice["prompt_logprobs"].is_array())
    fail("choices[0].prompt_logprobs", "missing or not a list (does the server support prompt_logprobs?)");
  const json& positions = choice["prompt_logprobs"];
  if (positions.size() != sequence_length)
    fail("choices[0].prompt_logprobs", "has " + std::to_string(positions.size()) + " entries for a prompt of " +
                                           std::to_string(sequence_length) + " tokens");
  std::vector<TopKRow> rows;
  rows.reserve(sequence_length - std::min(from, sequence_length));
  for (std::size_t j = from; j < sequence_length; ++j) {
    const std::string where = "choices[0].prompt_logprobs[" + std::to_string(j) + "]";
    const json& entry = positions[j];
    if (!entry.is_object()) fail(where, "expected a map from token id to log-prob");
    struct Candidate {
      std::int64_t id;
      double logprob;
      std::int64_t rank;
    };
    std::vector<Candidate> candidates;
    for (const auto& [key, value] : entry.items()) {
      std::size_t used = 0;
      std::int64_t id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || key.empty() || id < 0) fail(where, "key '" + key + "' is not a token id");
      double logprob = 0;
      std::int64_t rank = std::numeric_limits<std::int64_t>::max();
      if (value.is_number()) {
        logprob = value.get<double>();
      } else if (value.is_object() && value.contains("logprob") && value["logprob"].is_number()) {
        logprob = value["logprob"].get<double>();
        if (value.contains("rank") && value["rank"].is_number_integer()) rank = value["rank"].get<std::int64_t>();
      } else {
        fail(where + "[\"" + key + "\"]", "expected {\"logprob\": number, ...}");
      }
      // vLLM reports -inf as -9999 or a very negative number; NaN or a positive log-prob is a bug.
      if (std::isnan(logprob) || logprob > 1e-6) fail(where + "[\"" + key + "\"]", "log-prob must be <= 0");
      candidates.push_back({id, std::min(logprob, 0.0), rank});
    }
    if (static_cast<int>(candidates.size()) < k)
      fail(where, "has " + std::to_string(candidates.size()) + " log-probs, " + std::to_string(k) + " were asked for");
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
      if (a.logprob != b.logprob) return a.logprob > b.logprob;
      if (a.rank != b.rank) return a.rank < b.rank;
      return a.id < b.id;
    });
    TopKRow row;
    for (int i = 0; i < k; ++i) row.emplace_back(candidates[i].id, candidates[i].logprob);
    rows.push_back(std::move(row));
  }
  return rows;
}

struct CompletionsClient::Impl {
  CompletionsConfig config;
  Endpoints endpoints;
  std::mutex model_mutex;
  std::string model;

  explicit Impl(CompletionsConfig c)
      : config(std::move(c)), endpoints(prepared(config.endpoints)), model(config.model) {
    if (config.max_concurrent_requests == 0)
      throw std::invalid_argument(config.endpoints.field + ": the request concurrency must be at least 1");
  }

  std::string resolved_model() {
    std::lock_guard lock(model_mutex);
    if (!model.empty()) return model;
    auto outcome = endpoints.send(Method::get, "/v1/models", "");
    if (auto* error = std::get_if<TransportError>(&outcome))
      throw std::runtime_error("remote teacher: GET /v1/models: " + error->message);
    const auto& reply = std::get<Reply>(outcome);
    if (reply.status != 200)
      throw std::runtime_error("remote teacher: GET /v1/models: " + endpoints.config().describe(reply.status, reply.body));
    const json j = json::parse(reply.body, nullptr, false);
    if (!j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
        !j["data"][0].is_object() || !j["data"][0].contains("id") || !j["data"][0]["id"].is_string())
      throw std::runtime_error("remote teacher: GET /v1/models lists no model id; set teacher.remote_model");
    model = j["data"][0]["id"].get<std::string>();
    return model;
  }

  std::vector<TopKRow> one(const std::vector<std::int64_t>& sequence, std::size_t from, int k,
                           const std::string& name) {
    const std::string body = completions_request(name, sequence, k).dump();
    auto outcome = endpoints.send(Method::post, "/v1/completions", body, /*expect_object=*/true);
    if (auto* error = std::get_if<TransportError>(&outcome)) throw std::runtime_error(error->message);
    const auto& reply = std::get<Reply>(outcome);
    if (reply.status != 200) throw std::runtime_error(endpoints.config().describe(reply.status, reply.body));
    return parse_prompt_logprobs(json::parse(reply.body, nullptr, false), sequence.size(), from, k);
  }
};

CompletionsClient::CompletionsClient(CompletionsConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
CompletionsClient::~CompletionsClient() = default;

std::string CompletionsClient::model() { return impl_->resolved_model(); }
const Endpoints& CompletionsClient::endpoints() const { return impl_->endpoints; }

std::vector<std::vector<TopKRow>> CompletionsClient::prompt_topk(const std::vector<std::vector<std::int64_t>>& sequences,
                                                                 const std::vector<std::size_t>& from, int k) {
  if (from.size() != sequences.size()) throw std::invalid_argument("prompt_topk: one start per sequence");
  if (k < 1) throw std::invalid_argument("prompt_topk: k must be at least 1");
  std::vector<std::vector<TopKRow>> out(sequences.size());
  if (sequences.empty()) return out;
  const std::string name = impl_->resolved_model();
  std::vector<std::string> errors(sequences.size());
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next++; i < sequences.size(); i = next++) {
      try {
        out[i] = impl_->one(sequences[i], from[i], k, name);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  };
  const std::size_t threads = std::min(sequences.size(), impl_->config.max_concurrent_requests);
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  for (std::size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty())
      throw std::runtime_error("remote teacher (" + impl_->endpoints.base(0) + "), sequence " + std::to_string(i) +
                               ": " + errors[i]);
  return out;
}

}  // namespace distil::http
