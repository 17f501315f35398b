// Batched sampling with a preallocated KV cache, and chunked scoring (log-probs of given
// continuations plus the top-k at every position) that never materialises [B, T, V].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/model/model.h"
#include "trainer/text/tokenizer.h"

namespace distil::model {

struct SamplingParams {
  double temperature = 1.0;    // 0 = greedy
  double top_p = 1.0;          // nucleus mass kept (1 = off)
  int64_t top_k = 0;           // 0 = off
  int64_t max_new_tokens = 256;
  std::vector<int32_t> eos_ids;         // empty = the tokenizer's eos_token_ids()
  std::vector<std::string> stop_strings;  // checked on the decoded text of the response
  uint64_t seed = 0;
  // One seed per prompt: each row then draws from its own stream, so its sample does not depend
  // on which other prompts share the batch (data parallel ranks, batch splits). Empty: `seed`
  // seeds one stream for the whole batch.
  std::vector<uint64_t> row_seeds;
  bool use_kv_cache = true;  // false recomputes the whole prefix each step (reference/benchmark)
  // With the KV cache: rows whose prompts are identical (the trainer passes each prompt once per
  // sample of its group) are prefilled once and the cache rows copied to every such row. The
  // outputs are those of the unshared path (tested); false prefills every row (benchmark).
  bool share_prompt_prefill = true;
  // At most this many rows in the batch at once (0 = every prompt at once). With fewer rows than
  // prompts, a row whose sequence finished takes the next waiting prompt in the same step
  // (continuous batching), so the batch never waits for its longest member and the KV cache is
  // sized for this many rows. Each prompt's output does not depend on this value: without
  // row_seeds, `seed` then seeds one stream per prompt (so sampled output differs from the
  // unlimited batch's single stream, but not between limits). Needs use_kv_cache.
  int64_t max_batch_rows = 0;
};

// What one generate() call did (optional; for benchmarks and tests).
struct GenerateStats {
  int64_t prefilled_rows = 0;       // prompt rows run through a prefill (prompts alike count once per admission)
  int64_t admissions = 0;           // prompts that took a finished sequence's row
  int64_t decode_steps = 0;         // batched one-token forwards
  int64_t decoded_slot_tokens = 0;  // rows computed in those forwards (live or not)
  int64_t compactions = 0;          // KV cache compactions (continuous batching)
};

enum class FinishReason { eos, stop_string, length };
const char* finish_reason_name(FinishReason reason);

struct GeneratedSequence {
  std::vector<int32_t> tokens;   // the response, including the eos / stop-completing token
  std::vector<float> logprobs;   // log-prob of each token under the distribution sampled from
                                 // (after temperature, top-k, top-p); 0 for greedy
  FinishReason finish_reason = FinishReason::length;
  std::string text;              // decoded response, cut before a matched stop string
};

// Samples one response per prompt. Prompts are left-padded into one batch (of at most
// max_batch_rows rows); rows that finish stop costing compute. Same seed, params and prompts ->
// same output on the same device.
std::vector<GeneratedSequence> generate(CausalLM& model, const text::Tokenizer& tokenizer,
                                        const std::vector<std::vector<int32_t>>& prompts,
                                        const SamplingParams& params, GenerateStats* stats = nullptr);

// A left-padded batch of prompt ‖ response rows.
struct PackedBatch {
  torch::Tensor input_ids;       // [B, T] int64
  torch::Tensor attention_mask;  // [B, T] int64
  std::vector<int64_t> response_start;  // column of the first response token per row
  std::vector<int64_t> response_length;
};
PackedBatch pack_sequences(const std::vector<std::vector<int32_t>>& prompts,
                           const std::vector<std::vector<int32_t>>& responses, int32_t pad_id,
                           torch::Device device = torch::kCPU);

struct ScoredSequence {
  std::vector<float> token_logprobs;  // [L] log p(response[t] | prefix)
  int64_t k = 0;
  std::vector<int32_t> topk_ids;      // [L * k] row-major, descending log-prob
  std::vector<float> topk_logprobs;   // [L * k]
};

// No-grad log-probs of each response token and the top-k (ids, log-probs) at each response
// position. Logits are computed for at most `chunk_tokens` positions at a time.
std::vector<ScoredSequence> score(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                  const std::vector<std::vector<int32_t>>& responses, int64_t top_k,
                                  int64_t chunk_tokens = 1024, int32_t pad_id = 0);

// Differentiable helper for training: given final hidden states [N, H] at the positions that
// predict the targets, returns log_softmax(logits) gathered at `gather_ids` [N, K] (e.g. the
// sampled token and the teacher's top-k), computed in chunks of `chunk_tokens` rows with each
// chunk's [chunk, V] logits recomputed in backward (via checkpointing) rather than stored.
torch::Tensor chunked_gather_logprobs(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& gather_ids,
                                      int64_t chunk_tokens = 1024);

}  // namespace distil::model
