// The memory a training run needs per rank, estimated before any weight is loaded, so a run that
// cannot fit is refused with the key to change instead of dying of an out-of-memory error an
// hour in. Plain arithmetic from config.json and the training config (no LibTorch).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/config.h"

namespace distil::trainer {

// The decoder's shape, as config.json gives it.
struct ModelShape {
  int64_t vocab = 0, hidden = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0;
  bool tied_embeddings = false;
  int64_t qk_norm_params = 0;  // per layer: Qwen3's per-head q/k norms (2 x head_dim), OLMo's whole-width ones
  int64_t parameters() const;
};

// Reads config.json of a Hugging Face model directory (or the file itself). Throws
// std::runtime_error naming the file and the field.
ModelShape read_model_shape(const std::filesystem::path& model_dir_or_config);

struct MemoryPlanInputs {
  ModelShape shape;
  int world_size = 1;
  int zero_stage = 0;
  int64_t param_bytes = 4;    // model.dtype
  int64_t compute_bytes = 4;  // model.compute_dtype ("" = param_bytes)
  bool teacher_copy = false;  // ema / initial / model teachers keep a second set of weights
  int64_t rollout_rows = 0;   // sequences this rank generates at once (its prompts x group size)
  int64_t train_rows = 0;     // sequences this rank trains on per step
  int64_t group_rows = 1;     // rollout.group_size: a micro-batch holds at least one group
  int64_t rollout_slots = 0;  // rollout.max_batch_rows (0 = all rows at once)
  int64_t prompt_tokens = 0;  // longest prompt
  int64_t new_tokens = 0;     // rollout.max_new_tokens
  int64_t eval_rows = 0;      // eval.batch_prompts x eval.samples (0: no evaluation)
  int64_t eval_new_tokens = 0;
  int64_t micro_batch_tokens = 0;
  int64_t chunk_tokens = 0;
  bool gradient_checkpointing = false;
  bool fused_attention = false;  // LibTorch 2.x on CUDA: no [heads, T, T] score matrix is kept
};

MemoryPlanInputs memory_plan_inputs(const TrainConfig& config, const ModelShape& shape, int world_size,
                                    int64_t prompt_tokens, bool fused_attention);

struct MemoryPlan {
  struct Item {
    std::string name, detail;
    double bytes = 0;
  };
  std::vector<Item> items;  // weights, gradients, optimizer state, master weights, teacher, KV cache, activations
  double rollout_peak = 0;   // while generating (KV cache live, activations not)
  double training_peak = 0;  // during the student's backward
  double peak() const { return rollout_peak > training_peak ? rollout_peak : training_peak; }
  double bytes(const std::string& name) const;
};

MemoryPlan plan_memory(const MemoryPlanInputs& inputs);

// A table for the start-up log: one row per item, then both peaks against `budget_bytes`
// (0 = no budget known).
std::string format_memory_plan(const MemoryPlan& plan, const MemoryPlanInputs& inputs, double budget_bytes);

// Empty when the plan fits in `budget_bytes`; otherwise a message that says by how much it does
// not, and which keys would make it fit (each tried, with the peak it would give). `key` is set
// to the first key that alone makes it fit (or the largest item's key).
std::string memory_shortfall(const MemoryPlanInputs& inputs, double budget_bytes, std::string& key);

// The smallest power-of-two world size up to `limit` whose plan fits `budget_bytes` per rank (the global batch
// split over it), or 0 if none does.
int smallest_fitting_world_size(const TrainConfig& config, const ModelShape& shape, int64_t prompt_tokens,
                                bool fused_attention, double budget_bytes, int limit = 1024);


}  // namespace distil::trainer
