// Evaluation: n samples per held-out prompt at a temperature, graded by the env servers, reduced
// to avg@n, pass@k, best@k, maj@k (and code accuracy/score) overall and per domain.
#pragma once

#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

#include "env_server/client/feedback_client.h"
#include "tasks/task.h"
#include "trainer/config.h"
#include "trainer/model/model.h"
#include "trainer/rollout.h"
#include "trainer/text/tokenizer.h"

namespace distil::trainer {

// Feedback failed for more than eval.max_failed_feedback of the samples (or for all of them): the
// numbers would measure the endpoints, not the model.
struct EvaluationFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Returns {"metrics": summarize_eval(...), "samples": [{"task_id", "sample", "passed", "reward",
// "verdict", "extracted", "response"} ...] (when keep_samples)}. Throws EvaluationFailed (above).
nlohmann::json evaluate(model::CausalLM& model, const text::Tokenizer& tokenizer,
                        const PromptRenderer& renderer, const std::vector<tasks::Task>& tasks,
                        env::FeedbackClient& client, const EnvSection& env, const EvalSection& eval,
                        uint64_t seed, bool keep_samples);

}  // namespace distil::trainer
