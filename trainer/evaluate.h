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

// The same evaluation split over processes: part p of `parts` generates and grades the batches of
// eval.batch_prompts prompts whose index is p modulo parts (each batch seeded by its position, so
// its samples do not depend on who makes them) and returns them as JSON; combine_evaluation
// merges every part's JSON, in batch order, into what evaluate() returns. Throws EvaluationFailed.
nlohmann::json evaluate_part(model::CausalLM& model, const text::Tokenizer& tokenizer,
                             const PromptRenderer& renderer, const std::vector<tasks::Task>& tasks,
                             env::FeedbackClient& client, const EnvSection& env, const EvalSection& eval,
                             uint64_t seed, bool keep_samples, int part, int parts);
nlohmann::json combine_evaluation(const std::vector<nlohmann::json>& parts, const EnvSection& env,
                                  const EvalSection& eval, bool keep_samples);

}  // namespace distil::trainer
