#include "trainer/rollout.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace distil::trainer {

torch::Device resolve_device(const std::string& name, int local_rank) {
  if (name == "cpu") return torch::kCPU;
  if (name == "auto" && !torch::cuda::is_available()) return torch::kCPU;
  if (!torch::cuda::is_available()) {
    throw ConfigError("model.device", "'" + name + "' requested but CUDA is not available in this build");
  }
  // "auto" and a bare "cuda" mean this process's own GPU: torchrun and Slurm start one process per
  // GPU and number them by LOCAL_RANK (CUDA_VISIBLE_DEVICES has already narrowed what is visible).
  if (name == "auto" || name == "cuda") {
    const int visible = static_cast<int>(torch::cuda::device_count());
    if (local_rank >= visible) {
      const char* mask = std::getenv("CUDA_VISIBLE_DEVICES");
      throw ConfigError("model.device", "LOCAL_RANK " + std::to_string(local_rank) + " has no GPU: " +
                                            std::to_string(visible) + " visible (CUDA_VISIBLE_DEVICES=" +
                                            (mask ? mask : "unset") + "); start at most one process per GPU");
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
  }
  try {
    return torch::Device(name);
  } catch (const std::exception&) {
    throw ConfigError("model.device", "cannot parse '" + name + "'");
  }
}

std::vector<tasks::Task> load_task_files(const std::vector<std::string>& files,
                                         const std::vector<std::string>& domains,
                                         const std::string& config_key) {
  if (files.empty()) throw ConfigError(config_key, "no task files given");
  std::vector<tasks::Task> out;
  for (const auto& file : files) {
    auto loaded = tasks::load_jsonl(file);  // throws "path:line: field: message"
    for (auto& task : loaded.tasks) {
      if (domains.empty() || std::find(domains.begin(), domains.end(), task.domain) != domains.end()) {
        out.push_back(std::move(task));
      }
    }
  }
  if (out.empty()) throw ConfigError(config_key, "no tasks left after the domain filter");
  return out;
}

PromptRenderer::PromptRenderer(const ModelSection& config, const text::Tokenizer& tokenizer)
    : format_(text::ChatFormat::for_model(tokenizer, config.chat_format)),
      system_prompt_(config.system_prompt),
      enable_thinking_(config.enable_thinking),
      tokenizer_(&tokenizer) {}

std::string PromptRenderer::render(const std::string& user_message) const {
  std::vector<text::ChatMessage> messages;
  if (!system_prompt_.empty()) messages.push_back({"system", system_prompt_});
  messages.push_back({"user", user_message});
  return format_.render(messages, true, enable_thinking_);
}

std::vector<int32_t> PromptRenderer::encode(const std::string& user_message) const {
  return tokenizer_->encode(render(user_message), true);
}

env::ClientConfig client_config(const EnvSection& env) {
  env::ClientConfig c;
  c.endpoints = env.endpoints;
  c.policy = env.policy == "least_loaded" ? env::EndpointPolicy::least_loaded : env::EndpointPolicy::round_robin;
  c.request_timeout_s = env.request_timeout_s;
  c.max_attempts = env.max_attempts;
  c.overload_wait_s = env.overload_wait_s;
  if (!env.auth_token_env.empty()) {
    const char* token = std::getenv(env.auth_token_env.c_str());
    if (!token) throw ConfigError("env.auth_token_env", "environment variable " + env.auth_token_env + " is not set");
    c.auth_token = token;
  }
  return c;
}

std::string endpoint_list(const EnvSection& env) {
  std::string list;
  for (const auto& e : env.endpoints) list += (list.empty() ? "" : ", ") + e;
  return list;
}

env::FeedbackItem feedback_item(const tasks::Task& task, const std::string& response, const EnvSection& env) {
  env::FeedbackItem item;
  if (env.inline_tasks) {
    item.task = tasks::to_json(task);
  } else {
    item.task_id = task.id;
  }
  item.response = response;
  item.options = env.options;
  return item;
}

std::optional<std::string> reference_solution(const tasks::Task& task) {
  for (const char* key : {"reference_solution", "solution"}) {
    auto it = task.metadata.find(key);
    if (it != task.metadata.end() && it->is_string() && !it->get<std::string>().empty()) {
      return it->get<std::string>();
    }
  }
  if (task.answer && !task.answer->empty()) return "The answer is \\boxed{" + *task.answer + "}.";
  return std::nullopt;
}

model::SamplingParams sampling_params(double temperature, double top_p, int top_k, int max_new_tokens,
                                      const std::vector<std::string>& stop_strings, uint64_t seed) {
  model::SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.top_k = top_k;
  p.max_new_tokens = max_new_tokens;
  p.stop_strings = stop_strings;
  p.seed = seed;
  return p;
}

std::vector<model::GeneratedSequence> generate_in_batches(model::CausalLM& model,
                                                          const text::Tokenizer& tokenizer,
                                                          const std::vector<std::vector<int32_t>>& prompt_tokens,
                                                          model::SamplingParams params, std::size_t batch) {
  std::vector<model::GeneratedSequence> out;
  out.reserve(prompt_tokens.size());
  const uint64_t base_seed = params.seed;
  for (std::size_t begin = 0, chunk = 0; begin < prompt_tokens.size(); begin += batch, ++chunk) {
    const auto end = std::min(prompt_tokens.size(), begin + batch);
    std::vector<std::vector<int32_t>> part(prompt_tokens.begin() + begin, prompt_tokens.begin() + end);
    params.seed = base_seed + 1000003ULL * chunk;
    auto generated = model::generate(model, tokenizer, part, params);
    for (auto& g : generated) out.push_back(std::move(g));
  }
  return out;
}

void apply_feedback(std::vector<Rollout>& rollouts, const std::vector<env::FeedbackOutcome>& outcomes) {
  if (outcomes.size() != rollouts.size()) {
    throw std::runtime_error("feedback client returned " + std::to_string(outcomes.size()) +
                             " outcomes for " + std::to_string(rollouts.size()) + " rollouts");
  }
  for (std::size_t i = 0; i < rollouts.size(); ++i) {
    auto& r = rollouts[i];
    const auto& o = outcomes[i];
    r.graded = false;
    if (!o.ok) {
      r.feedback_error = o.error.empty() ? "feedback failed" : o.error;
      continue;
    }
    const auto& j = o.result;
    if (!j.is_object() || !j.contains("reward") || !j["reward"].is_number() ||
        !std::isfinite(j["reward"].get<double>())) {
      r.feedback_error = "result without a numeric reward";
      continue;
    }
    r.graded = true;
    r.result = j;
    r.reward = std::clamp(j["reward"].get<double>(), 0.0, 1.0);
    r.passed = j.contains("passed") && j["passed"].is_boolean() && j["passed"].get<bool>();
    r.verdict = j.contains("verdict") && j["verdict"].is_string() ? j["verdict"].get<std::string>() : "";
    r.feedback = j.contains("feedback") && j["feedback"].is_string() ? j["feedback"].get<std::string>() : "";
    // A server that predates "informative" (or another env): failed-response feedback counts.
    r.feedback_informative = j.contains("informative") && j["informative"].is_boolean()
                                 ? j["informative"].get<bool>()
                                 : !r.passed && !r.feedback.empty();
    r.extracted = j.contains("extracted") && j["extracted"].is_string() ? j["extracted"].get<std::string>() : "";
  }
}

}  // namespace distil::trainer
