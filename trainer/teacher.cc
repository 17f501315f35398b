#include "trainer/teacher.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>

#include <thread>

#include "common/reasoning.h"
#include "env_server/client/completions_client.h"
#include "env_server/client/http_endpoints.h"

namespace distil::trainer {

std::string strip_reasoning(const std::string& text) {
  const std::string out = common::strip_think(text);
  const auto first = out.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = out.find_last_not_of(" \t\r\n");
  return out.substr(first, last - first + 1);
}

std::string fill_template(std::string tmpl, const std::vector<std::pair<std::string, std::string>>& values) {
  // One left-to-right scan so that substituted text is never re-scanned for placeholders (a model
  // response containing "{feedback}" stays literal).
  std::string out;
  std::size_t pos = 0;
  while (pos < tmpl.size()) {
    bool replaced = false;
    if (tmpl[pos] == '{') {
      for (const auto& [name, value] : values) {
        const std::string key = "{" + name + "}";
        if (tmpl.compare(pos, key.size(), key) == 0) {
          out += value;
          pos += key.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += tmpl[pos++];
  }
  return out;
}

const char* to_string(ContextKind kind) {
  switch (kind) {
    case ContextKind::sibling: return "sibling";
    case ContextKind::feedback: return "feedback";
    case ContextKind::reference: return "reference";
    case ContextKind::own_response: return "own_response";
    case ContextKind::masked: return "masked";
  }
  return "masked";
}

TeacherContext teacher_context(const TeacherSection& config, const std::string& mode, const std::string& prompt,
                               const std::vector<RolloutView>& group, std::size_t index,
                               const std::optional<std::string>& reference) {
  if (index >= group.size()) throw std::out_of_range("teacher_context: rollout index outside its group");
  auto solution_text = [&](const std::string& response) {
    return config.strip_reasoning ? strip_reasoning(response) : response;
  };
  auto render = [&](ContextKind kind, const std::string& solution, const std::string& feedback) {
    return TeacherContext{kind, fill_template(config.reprompt_template,
                                              {{"prompt", prompt}, {"solution", solution}, {"feedback", feedback}})};
  };
  if (mode == "reference") {
    if (!reference || reference->empty()) return {};
    return render(ContextKind::reference, fill_template(config.reference_template, {{"reference", *reference}}), "");
  }
  for (std::size_t j = 0; j < group.size(); ++j) {
    if (j == index || !group[j].passed) continue;
    const std::string other = solution_text(group[j].response);
    if (other.empty()) continue;
    return render(ContextKind::sibling, fill_template(config.solution_template, {{"response", other}}), "");
  }
  const RolloutView& self = group[index];
  if (self.passed) {
    // Never "feedback from your unsuccessful earlier attempt" on a right answer: that context
    // teaches the teacher to move away from it.
    const std::string own = solution_text(self.response);
    if (config.passed_without_sibling != "own_response" || own.empty()) return {};
    return render(ContextKind::own_response, fill_template(config.solution_template, {{"response", own}}), "");
  }
  const bool usable = !self.feedback.empty() && (self.informative || config.uninformative_feedback == "use");
  if (!usable) return {};
  return render(ContextKind::feedback, "", fill_template(config.feedback_template, {{"feedback", self.feedback}}));
}

std::optional<std::string> teacher_message(const TeacherSection& config, const std::string& mode,
                                           const std::string& prompt,
                                           const std::vector<RolloutView>& group, std::size_t index,
                                           const std::optional<std::string>& reference) {
  return teacher_context(config, mode, prompt, group, index, reference).message;
}

namespace {

class LocalTeacher : public TeacherScorer {
 public:
  LocalTeacher(model::CausalLM model, ScoringLimits limits) : model_(std::move(model)), limits_(limits) {}
  PositionTopK topk(const TokenRows& prompts, const TokenRows& responses, int64_t k) override {
    return response_topk(model_, prompts, responses, limits_.pad_id, k, limits_.chunk_tokens,
                         limits_.token_budget);
  }
  torch::Tensor logprobs_at(const TokenRows& prompts, const TokenRows& responses,
                            const torch::Tensor& ids) override {
    return response_logprobs_at(model_, prompts, responses, ids, limits_.pad_id, limits_.chunk_tokens,
                                limits_.token_budget);
  }

 private:
  model::CausalLM model_;
  ScoringLimits limits_;
};

// Both remote protocols stand on the env client's HTTP layer: pooled connections, retries,
// failover between replicas, requests in flight concurrently (one per rollout).
http::EndpointsConfig remote_endpoints(const TeacherSection& config) {
  http::EndpointsConfig e;
  e.field = "teacher.remote_url";
  e.urls = config.remote_urls;
  e.allow_path = true;
  e.request_timeout_s = config.remote_timeout_s;
  e.user_agent = "distil-teacher";
  return e;
}

// Runs fn(i) for i in [0, n) on up to `threads` threads; rethrows the first failure (by index).
template <class Fn>
void for_each_concurrently(std::size_t n, std::size_t threads, Fn fn) {
  std::vector<std::string> errors(n);
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  };
  threads = std::min(n, std::max<std::size_t>(threads, 1));
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  for (std::size_t i = 0; i < n; ++i)
    if (!errors[i].empty()) throw std::runtime_error("remote teacher, rollout " + std::to_string(i) + ": " + errors[i]);
}

PositionTopK concatenated(std::vector<PositionTopK>& parts, int64_t k) {
  std::vector<torch::Tensor> ids, logp;
  for (auto& p : parts) {
    ids.push_back(p.ids);
    logp.push_back(p.logp);
  }
  if (ids.empty()) return {torch::zeros({0, k}, torch::kLong), torch::zeros({0, k})};
  return {torch::cat(ids), torch::cat(logp)};
}

// The project's own protocol: POST {url} {"prompt_tokens", "response_tokens", "top_k"}.
class DistilRemoteTeacher : public TeacherScorer {
 public:
  DistilRemoteTeacher(const TeacherSection& config, int64_t vocab_size)
      : endpoints_([&] {
          auto e = remote_endpoints(config);
          e.health_path = "";  // the protocol has no health route: probe the URL itself
          e.health_any_answer = true;
          return e;
        }()),
        concurrency_(static_cast<std::size_t>(config.remote_concurrency)),
        vocab_size_(vocab_size) {}

  PositionTopK topk(const TokenRows& prompts, const TokenRows& responses, int64_t k) override {
    std::vector<PositionTopK> parts(prompts.size());
    for_each_concurrently(prompts.size(), concurrency_, [&](std::size_t i) {
      const nlohmann::json request = {{"prompt_tokens", prompts[i]}, {"response_tokens", responses[i]}, {"top_k", k}};
      auto outcome = endpoints_.send(http::Method::post, "", request.dump(), /*expect_object=*/true);
      if (auto* error = std::get_if<http::TransportError>(&outcome)) throw std::runtime_error(error->message);
      const auto& reply = std::get<http::Reply>(outcome);
      if (reply.status != 200) throw std::runtime_error(endpoints_.config().describe(reply.status, reply.body));
      parts[i] = parse_remote_topk(nlohmann::json::parse(reply.body), responses[i].size(), k, vocab_size_);
    });
    return concatenated(parts, k);
  }

  torch::Tensor logprobs_at(const TokenRows&, const TokenRows&, const torch::Tensor&) override {
    throw std::runtime_error("a remote teacher returns only its own top-k; it cannot score given ids");
  }

 private:
  http::Endpoints endpoints_;
  std::size_t concurrency_;
  int64_t vocab_size_;
};

// vLLM / SGLang: the teacher prompt and the response as one token-id prompt, with
// prompt_logprobs k; the response positions' top-k are the teacher's distributions.
class OpenAIRemoteTeacher : public TeacherScorer {
 public:
  OpenAIRemoteTeacher(const TeacherSection& config, int64_t vocab_size)
      : client_([&] {
          http::CompletionsConfig c;
          c.endpoints = remote_endpoints(config);
          c.model = config.remote_model;
          c.max_concurrent_requests = static_cast<std::size_t>(config.remote_concurrency);
          return c;
        }()),
        vocab_size_(vocab_size) {}

  PositionTopK topk(const TokenRows& prompts, const TokenRows& responses, int64_t k) override {
    std::vector<std::vector<std::int64_t>> sequences(prompts.size());
    std::vector<std::size_t> from(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      if (prompts[i].empty()) throw std::invalid_argument("remote teacher: rollout " + std::to_string(i) + " has an empty prompt");
      sequences[i].assign(prompts[i].begin(), prompts[i].end());
      sequences[i].insert(sequences[i].end(), responses[i].begin(), responses[i].end());
      from[i] = prompts[i].size();
    }
    const auto rows = client_.prompt_topk(sequences, from, static_cast<int>(k));
    // Through the same validation as the distil protocol's replies (vocabulary, mass, duplicates).
    std::vector<PositionTopK> parts(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      nlohmann::json reply = {{"topk_ids", nlohmann::json::array()}, {"topk_logprobs", nlohmann::json::array()}};
      for (const auto& row : rows[i]) {
        nlohmann::json ids = nlohmann::json::array(), logp = nlohmann::json::array();
        for (const auto& [id, lp] : row) {
          ids.push_back(id);
          logp.push_back(lp);
        }
        reply["topk_ids"].push_back(std::move(ids));
        reply["topk_logprobs"].push_back(std::move(logp));
      }
      try {
        parts[i] = parse_remote_topk(reply, responses[i].size(), k, vocab_size_);
      } catch (const std::exception& e) {
        throw std::runtime_error("remote teacher, rollout " + std::to_string(i) + ": " + e.what());
      }
    }
    return concatenated(parts, k);
  }

  torch::Tensor logprobs_at(const TokenRows&, const TokenRows&, const torch::Tensor&) override {
    throw std::runtime_error("a remote teacher returns only its own top-k; it cannot score given ids");
  }

 private:
  http::CompletionsClient client_;
  int64_t vocab_size_;
};

}  // namespace

PositionTopK parse_remote_topk(const nlohmann::json& reply, std::size_t response_length, int64_t k,
                               int64_t vocab_size) {
  auto fail = [](const std::string& field, const std::string& problem) {
    throw std::runtime_error("remote teacher reply: " + field + ": " + problem);
  };
  if (!reply.is_object()) fail("<root>", "expected an object");
  for (const char* field : {"topk_ids", "topk_logprobs"}) {
    if (!reply.contains(field) || !reply[field].is_array()) fail(field, "missing or not an array");
    if (reply[field].size() != response_length) {
      fail(field, "has " + std::to_string(reply[field].size()) + " rows for " +
                      std::to_string(response_length) + " response tokens");
    }
  }
  const int64_t rows = static_cast<int64_t>(response_length);
  auto ids = torch::zeros({rows, k}, torch::kLong);
  auto logp = torch::zeros({rows, k}, torch::kFloat);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto logp_a = logp.accessor<float, 2>();
  for (int64_t t = 0; t < rows; ++t) {
    const auto& id_row = reply["topk_ids"][t];
    const auto& lp_row = reply["topk_logprobs"][t];
    const std::string where = "[" + std::to_string(t) + "]";
    if (!id_row.is_array() || static_cast<int64_t>(id_row.size()) != k) {
      fail("topk_ids" + where, "expected " + std::to_string(k) + " ids");
    }
    if (!lp_row.is_array() || static_cast<int64_t>(lp_row.size()) != k) {
      fail("topk_logprobs" + where, "expected " + std::to_string(k) + " log-probs");
    }
    std::set<int64_t> seen;
    double mass = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      if (!id_row[j].is_number_integer()) fail("topk_ids" + where, "not an integer");
      const int64_t id = id_row[j].get<int64_t>();
      if (id < 0 || id >= vocab_size) fail("topk_ids" + where, "id " + std::to_string(id) + " outside the vocabulary");
      if (!seen.insert(id).second) fail("topk_ids" + where, "duplicate id " + std::to_string(id));
      if (!lp_row[j].is_number()) fail("topk_logprobs" + where, "not a number");
      const double lp = lp_row[j].get<double>();
      if (!std::isfinite(lp) || lp > 1e-6) fail("topk_logprobs" + where, "must be finite and <= 0");
      mass += std::exp(lp);
      ids_a[t][j] = id;
      logp_a[t][j] = static_cast<float>(std::min(lp, 0.0));
    }
    if (mass > 1.0 + 1e-3) fail("topk_logprobs" + where, "probabilities sum to more than 1");
  }
  return {ids, logp};
}

std::unique_ptr<TeacherScorer> make_local_teacher(model::CausalLM model, ScoringLimits limits) {
  return std::make_unique<LocalTeacher>(std::move(model), limits);
}

std::unique_ptr<TeacherScorer> make_remote_teacher(const TeacherSection& config, int64_t vocab_size) {
  if (config.remote_urls.empty()) throw std::invalid_argument("teacher.remote_url: required for a remote teacher");
  if (config.remote_api == "openai") return std::make_unique<OpenAIRemoteTeacher>(config, vocab_size);
  if (config.remote_api == "distil") return std::make_unique<DistilRemoteTeacher>(config, vocab_size);
  throw std::invalid_argument("teacher.remote_api: '" + config.remote_api + "' is not distil or openai");
}

void ema_update(model::CausalLM& teacher, model::CausalLM& student, double rate) {
  torch::NoGradGuard no_grad;
  auto source = student->named_parameters();
  for (auto& item : teacher->named_parameters()) {
    const auto* from = source.find(item.key());
    if (!from) throw std::logic_error("ema_update: parameter " + item.key() + " missing in the student");
    item.value().mul_(1.0 - rate).add_(from->to(item.value().dtype()), rate);
  }
}

model::CausalLM clone_model(model::CausalLM& source) {
  auto params = source->named_parameters();
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;
  for (const auto& p : params) {
    device = p.value().device();
    dtype = p.value().scalar_type();
    break;
  }
  auto copy = model::make_random(source->config(), 0);
  copy->to(device, dtype);
  copy->set_compute_dtype(source->compute_dtype());
  torch::NoGradGuard no_grad;
  for (auto& item : copy->named_parameters()) {
    const auto* from = params.find(item.key());
    if (!from) throw std::logic_error("clone_model: parameter " + item.key() + " missing");
    item.value().copy_(*from);
  }
  for (auto& p : copy->parameters()) p.set_requires_grad(false);
  return copy;
}

}  // namespace distil::trainer
