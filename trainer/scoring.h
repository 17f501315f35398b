// Forward passes over (prompt ‖ response) rows at response positions, chunked through lm_head so
// the [B,T,V] logits never exist at once: the no-grad passes (teacher top-k, old log-probs,
// student top-k) and the student pass with gradient that feeds an Objective.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/model/model.h"
#include "trainer/objectives.h"

namespace distil::trainer {

using TokenRows = std::vector<std::vector<int32_t>>;

// Calls fn(logp, first) for consecutive chunks of response positions, where logp is the float32
// log-softmax [n,V] of the positions first..first+n-1 (rows in sequence order, then position
// order; a response of length L contributes L positions). Sequences are run `token_budget`
// tokens at a time. No gradient.
void for_each_response_logprobs(model::CausalLM& model, const TokenRows& prompts,
                                const TokenRows& responses, int32_t pad_id, int64_t chunk_tokens,
                                int64_t token_budget,
                                const std::function<void(const torch::Tensor&, int64_t)>& fn);

// Top-k (ids, log-probs) at every response position, and log-probs at given ids ([N,K] rows).
struct PositionTopK {
  torch::Tensor ids;   // [N,K] int64
  torch::Tensor logp;  // [N,K] float32
};
PositionTopK response_topk(model::CausalLM& model, const TokenRows& prompts, const TokenRows& responses,
                           int32_t pad_id, int64_t k, int64_t chunk_tokens, int64_t token_budget);
torch::Tensor response_logprobs_at(model::CausalLM& model, const TokenRows& prompts,
                                   const TokenRows& responses, const torch::Tensor& ids, int32_t pad_id,
                                   int64_t chunk_tokens, int64_t token_budget);

// One student micro-batch: sequences [b], their positions' targets as [n,*] rows (n = sum of
// lengths), and the per-sequence data of SequenceBatch (mask and old_logq in [b,Tmax]).
struct StudentMicroBatch {
  TokenRows prompts, responses;
  PositionTargets targets;
  SequenceBatch batch;  // normalizer must be the whole (global) batch's constant
};

// Forward with gradient, objective, backward (gradients accumulate into the parameters). lm_head
// runs chunk by chunk twice: once without grad to get every position's terms for the sequence
// loss, once with grad to push that loss's gradient through each chunk; then the hidden states
// are backpropagated through the decoder once. Returns the loss parts (summed values).
LossOutput student_backward(model::CausalLM& model, const Objective& objective,
                            const StudentMicroBatch& micro, int32_t pad_id, int64_t chunk_tokens);

}  // namespace distil::trainer
