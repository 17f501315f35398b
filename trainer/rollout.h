// What training and evaluation share: devices, task files, prompt rendering, sampling and
// turning env results into rollouts.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "env_server/client/feedback_client.h"
#include "tasks/task.h"
#include "trainer/config.h"
#include "trainer/model/generate.h"
#include "trainer/text/chat.h"
#include "trainer/text/tokenizer.h"

namespace distil::trainer {

// "auto" -> this process's GPU (cuda:LOCAL_RANK) when CUDA is available, else cpu; "cuda" ->
// cuda:LOCAL_RANK; "cuda:N" -> that device. Throws ConfigError if CUDA is absent or LOCAL_RANK
// has no visible GPU.
torch::Device resolve_device(const std::string& name, int local_rank = 0);

// Loads and concatenates task files; keeps only `domains` when non-empty. Throws with the file,
// line and field of the first bad record, or when nothing is left.
std::vector<tasks::Task> load_task_files(const std::vector<std::string>& files,
                                         const std::vector<std::string>& domains,
                                         const std::string& config_key);

class PromptRenderer {
 public:
  PromptRenderer(const ModelSection& config, const text::Tokenizer& tokenizer);
  // The chat-formatted text ending in the assistant generation prompt.
  std::string render(const std::string& user_message) const;
  std::vector<int32_t> encode(const std::string& user_message) const;

 private:
  text::ChatFormat format_;
  std::string system_prompt_;
  bool enable_thinking_;
  const text::Tokenizer* tokenizer_;
};

env::ClientConfig client_config(const EnvSection& env);
// "http://a:8080, http://b:8080": the endpoints, for error messages.
std::string endpoint_list(const EnvSection& env);

// The request for one (task, response): inline task or task id, plus the configured options.
env::FeedbackItem feedback_item(const tasks::Task& task, const std::string& response, const EnvSection& env);

// A rollout as the loop sees it after feedback.
struct Rollout {
  std::size_t task_index = 0;
  int64_t group = 0;  // prompt group within the batch
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> response_tokens;
  std::string response_text;
  bool graded = false;  // feedback arrived
  std::string feedback_error;
  double reward = 0.0;
  bool passed = false;
  std::string verdict;
  std::string feedback;
  bool feedback_informative = true;  // the server's "informative" (absent: non-empty feedback on a failure)
  std::string extracted;
  nlohmann::json result;
};

// The reference solution a task offers for the teacher context / sft: metadata.reference_solution
// or metadata.solution when present, else "The answer is \boxed{answer}" for answered tasks.
std::optional<std::string> reference_solution(const tasks::Task& task);

// Sampling parameters from the rollout/eval sections.
model::SamplingParams sampling_params(double temperature, double top_p, int top_k, int max_new_tokens,
                                      const std::vector<std::string>& stop_strings, uint64_t seed);

// Generates one response per prompt in `prompt_tokens` in chunks of at most `batch` prompts.
std::vector<model::GeneratedSequence> generate_in_batches(model::CausalLM& model,
                                                          const text::Tokenizer& tokenizer,
                                                          const std::vector<std::vector<int32_t>>& prompt_tokens,
                                                          model::SamplingParams params, std::size_t batch);

// Applies feedback outcomes to rollouts (graded, reward, passed, verdict, feedback, extracted).
// A malformed result counts as failed feedback (never as reward 0).
void apply_feedback(std::vector<Rollout>& rollouts, const std::vector<env::FeedbackOutcome>& outcomes);

}  // namespace distil::trainer
