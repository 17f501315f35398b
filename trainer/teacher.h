// The teacher: its context (DESIGN.md "Data flow", step 3) and its weights (step 4): the current
// student, an EMA of it, the initial weights, another local model, or a remote blackbox that
// returns top-k log-probs over HTTP.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "trainer/config.h"
#include "trainer/model/model.h"
#include "trainer/scoring.h"

namespace distil::trainer {

// common::strip_think (<think>...</think> blocks, a leading lone </think> and what precedes it, an
// unclosed <think> and the rest), then trims whitespace.
std::string strip_reasoning(const std::string& text);

// Fills "{name}" placeholders; unknown placeholders are left as they are.
std::string fill_template(std::string tmpl, const std::vector<std::pair<std::string, std::string>>& values);

struct RolloutView {
  bool passed = false;
  std::string response;
  std::string feedback;
  bool informative = true;  // the grader's "informative": the feedback says more than the verdict
};

// Which context a rollout's teacher got (DESIGN.md "Data flow", step 3).
enum class ContextKind { sibling, feedback, reference, own_response, masked };
const char* to_string(ContextKind kind);

struct TeacherContext {
  ContextKind kind = ContextKind::masked;
  std::optional<std::string> message;  // nullopt exactly when kind is masked
};

// The teacher's user message for rollout `index` of a group, with SDPO's reference semantics.
// mode "feedback": the first other successful sibling's response as the solution; else, for a
// failed rollout, the env feedback when it is informative (teacher.uninformative_feedback: use
// takes any non-empty feedback); else, for a passed rollout, nothing (teacher.
// passed_without_sibling: own_response takes its own response as the solution). mode
// "reference": the reference solution. No context means the rollout is masked out of the
// distillation loss and its normaliser. The same chat format as the student prompt wraps it.
TeacherContext teacher_context(const TeacherSection& config, const std::string& mode, const std::string& prompt,
                               const std::vector<RolloutView>& group, std::size_t index,
                               const std::optional<std::string>& reference);
// teacher_context(...).message.
std::optional<std::string> teacher_message(const TeacherSection& config, const std::string& mode,
                                           const std::string& prompt,
                                           const std::vector<RolloutView>& group, std::size_t index,
                                           const std::optional<std::string>& reference);

// Teacher log-probs at response positions.
class TeacherScorer {
 public:
  virtual ~TeacherScorer() = default;
  // Top-k at each position of each response, rows in sequence-then-position order.
  virtual PositionTopK topk(const TokenRows& prompts, const TokenRows& responses, int64_t k) = 0;
  // Log-probs at given ids [N,K] (sdpo). Remote teachers cannot, and throw.
  virtual torch::Tensor logprobs_at(const TokenRows& prompts, const TokenRows& responses,
                                    const torch::Tensor& ids) = 0;
};

struct ScoringLimits {
  int32_t pad_id = 0;
  int64_t chunk_tokens = 1024;
  int64_t token_budget = 8192;
};

// A local model (which may be the student itself: its weights are read under no_grad).
std::unique_ptr<TeacherScorer> make_local_teacher(model::CausalLM model, ScoringLimits limits);

// A remote teacher (teacher.remote_url, one URL or replicas to fail over between; requests run
// teacher.remote_concurrency at a time over pooled connections with the env client's retries).
// teacher.remote_api distil: POST {url} {"prompt_tokens": [...], "response_tokens": [...],
// "top_k": k} -> {"topk_ids": [[k ids] per response token], "topk_logprobs": [[k floats] ...]}.
// openai: POST {url}/v1/completions with the prompt and response as one token-id prompt and
// prompt_logprobs k (vLLM, SGLang). Either reply is validated (shape, id range, finite
// non-positive log-probs, distinct ids, total mass <= 1).
std::unique_ptr<TeacherScorer> make_remote_teacher(const TeacherSection& config, int64_t vocab_size);
// The validation of a remote reply, exposed for tests: throws std::runtime_error naming the field.
PositionTopK parse_remote_topk(const nlohmann::json& reply, std::size_t response_length, int64_t k,
                               int64_t vocab_size);

// teacher <- (1 - rate) teacher + rate student, parameter by parameter.
void ema_update(model::CausalLM& teacher, model::CausalLM& student, double rate);
// A deep copy with the same weights (for the EMA and initial teachers).
model::CausalLM clone_model(model::CausalLM& source);

}  // namespace distil::trainer
