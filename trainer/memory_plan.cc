#include "trainer/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "trainer/distributed.h"

namespace distil::trainer {
namespace fs = std::filesystem;

namespace {

// What the plan may fill of a device: the rest is for the CUDA context, the allocator's
// fragmentation and short-lived temporaries the plan does not itemise.
constexpr double kUsableFraction = 0.9;

constexpr double kWindowElements = static_cast<double>(ShardedAdamW::kWindowElements);

int64_t dtype_bytes(const std::string& name) {
  if (name == "float32") return 4;
  if (name == "bfloat16" || name == "float16") return 2;
  throw std::invalid_argument("dtype '" + name + "'");
}

int64_t field(const nlohmann::json& config, const char* name, const std::string& file, int64_t fallback = -1) {
  if (!config.contains(name) || config[name].is_null()) {
    if (fallback >= 0) return fallback;
    throw std::runtime_error(file + ": " + name + ": missing");
  }
  if (!config[name].is_number_integer() || config[name].get<int64_t>() <= 0)
    throw std::runtime_error(file + ": " + name + ": expected a positive integer");
  return config[name].get<int64_t>();
}

std::string human(double bytes) {
  char text[32];
  if (bytes >= 1e9) std::snprintf(text, sizeof text, "%.1f GB", bytes / 1e9);
  else if (bytes >= 1e6) std::snprintf(text, sizeof text, "%.1f MB", bytes / 1e6);
  else std::snprintf(text, sizeof text, "%.0f kB", bytes / 1e3);
  return text;
}

}  // namespace

int64_t ModelShape::parameters() const {
  const int64_t q = hidden * heads * head_dim, kv = 2 * hidden * kv_heads * head_dim, o = heads * head_dim * hidden;
  const int64_t mlp = 3 * hidden * intermediate;
  const int64_t norms = 2 * hidden + qk_norm_params;
  const int64_t embeddings = vocab * hidden * (tied_embeddings ? 1 : 2);
  return embeddings + layers * (q + kv + o + mlp + norms) + hidden;
}

ModelShape read_model_shape(const fs::path& model_dir_or_config) {
  const fs::path file = fs::is_directory(model_dir_or_config) ? model_dir_or_config / "config.json" : model_dir_or_config;
  std::ifstream in(file);
  if (!in) throw std::runtime_error(file.string() + ": cannot open");
  const auto config = nlohmann::json::parse(in, nullptr, false);
  if (!config.is_object()) throw std::runtime_error(file.string() + ": not a JSON object");
  ModelShape s;
  const std::string name = file.string();
  s.vocab = field(config, "vocab_size", name);
  s.hidden = field(config, "hidden_size", name);
  s.layers = field(config, "num_hidden_layers", name);
  s.heads = field(config, "num_attention_heads", name);
  s.kv_heads = field(config, "num_key_value_heads", name, s.heads);
  s.head_dim = field(config, "head_dim", name, s.hidden / s.heads);
  s.intermediate = field(config, "intermediate_size", name);
  s.tied_embeddings = config.value("tie_word_embeddings", false);
  const std::string type = config.value("model_type", "");
  if (type == "qwen3") s.qk_norm_params = 2 * s.head_dim;
  else if (type.rfind("olmo", 0) == 0) s.qk_norm_params = (s.heads + s.kv_heads) * s.head_dim;
  return s;
}

MemoryPlanInputs memory_plan_inputs(const TrainConfig& config, const ModelShape& shape, int world_size,
                                    int64_t prompt_tokens, bool fused_attention) {
  MemoryPlanInputs in;
  in.shape = shape;
  in.world_size = std::max(1, world_size);
  in.zero_stage = config.distributed.zero_stage;
  in.param_bytes = dtype_bytes(config.model.dtype);
  in.compute_bytes = config.model.compute_dtype.empty() ? in.param_bytes : dtype_bytes(config.model.compute_dtype);
  const std::string weights = config.resolved_teacher_weights();
  in.teacher_copy = make_objective(config.algo.objective)->needs_teacher() &&
                    (weights == "ema" || weights == "initial" || weights == "model");
  const int64_t prompts_here = (config.rollout.prompts_per_step + in.world_size - 1) / in.world_size;
  in.rollout_rows = prompts_here * config.rollout.group_size;
  in.train_rows = in.rollout_rows;
  in.group_rows = config.rollout.group_size;
  in.rollout_slots = config.rollout.max_batch_rows;
  in.prompt_tokens = prompt_tokens;
  in.new_tokens = config.rollout.max_new_tokens;
  // Evaluation generates its own batches (every rank the whole eval batch).
  if (!config.data.eval_tasks.empty()) {
    in.eval_rows = static_cast<int64_t>(config.eval.batch_prompts) * config.eval.samples;
    in.eval_new_tokens = config.eval.max_new_tokens;
  }
  in.micro_batch_tokens = config.optim.micro_batch_tokens;
  in.chunk_tokens = config.optim.chunk_tokens;
  in.gradient_checkpointing = config.model.gradient_checkpointing;
  in.fused_attention = fused_attention;
  return in;
}

double MemoryPlan::bytes(const std::string& name) const {
  for (const auto& item : items)
    if (item.name == name) return item.bytes;
  return 0;
}

MemoryPlan plan_memory(const MemoryPlanInputs& in) {
  const auto& s = in.shape;
  const double P = static_cast<double>(s.parameters());
  const double N = in.world_size;
  const double shard = std::ceil(P / N);
  const double pb = static_cast<double>(in.param_bytes), cb = static_cast<double>(in.compute_bytes);
  MemoryPlan plan;
  auto add = [&](std::string name, double bytes, std::string detail) {
    plan.items.push_back({std::move(name), std::move(detail), bytes});
  };
  char d[256];
  std::snprintf(d, sizeof d, "%.3gB parameters x %g B", P, pb);
  add("weights", P * pb, d);
  add("gradients", P * pb, in.zero_stage >= 2 ? "full during backward, dropped once reduced" : "full, kept between steps");
  if (in.zero_stage == 0) {
    add("optimizer state", 2 * P * pb, "AdamW moments, every rank holds all");
    add("master weights", 0, "none (AdamW steps the parameters themselves)");
    add("collective buffers", in.world_size > 1 ? 2 * P * 4 : 0, "flat fp32 gradient + its all-reduce");
  } else {
    std::snprintf(d, sizeof d, "AdamW moments, fp32, 1/%d of them", in.world_size);
    add("optimizer state", 2 * shard * 4, d);
    add("master weights", 2 * shard * 4, "fp32 slice + its gradient");
    // A window and its reduced copy (ShardedAdamW::kWindowElements over all ranks).
    add("collective buffers", 2 * std::min(kWindowElements, shard * N) * 4, "windowed reduce / gather");
  }
  add("teacher copy", in.teacher_copy ? P * pb : 0, in.teacher_copy ? "ema / initial / model teacher weights" : "none (teacher is the student or remote)");
  const double seq = static_cast<double>(in.prompt_tokens + in.new_tokens);
  // The cache holds the larger of a rollout batch and an evaluation batch. With continuous
  // batching (fewer slots than rows) it holds the slots, with max_new_tokens spare columns.
  const bool slots_limit = in.rollout_slots > 0 && in.rollout_slots < in.rollout_rows;
  double kv_rows = static_cast<double>(slots_limit ? in.rollout_slots : in.rollout_rows);
  double kv_seq = slots_limit ? seq + static_cast<double>(in.new_tokens) : seq;
  const double eval_seq = static_cast<double>(in.prompt_tokens + in.eval_new_tokens);
  const bool eval_larger = static_cast<double>(in.eval_rows) * eval_seq > kv_rows * kv_seq;
  if (eval_larger) kv_rows = static_cast<double>(in.eval_rows), kv_seq = eval_seq;
  const double kv = kv_rows * kv_seq * s.layers * 2 * s.kv_heads * s.head_dim * cb;
  std::snprintf(d, sizeof d, "%.0f rows x %.0f tokens x %lld layers%s", kv_rows, kv_seq, static_cast<long long>(s.layers),
                eval_larger ? " (an evaluation batch)" : "");
  add("kv cache", kv, d);
  add("sampling buffers", kv_rows * s.vocab * 4 * 4, "next-token logits, softmax, cdf");
  // Saved activations per token and layer (elements): norms' inputs and outputs, q/k/v before and
  // after RoPE, the attention output, the MLP's gate, up, activation and product.
  // A micro-batch is whole prompt groups up to micro_batch_tokens (at least one group), and never
  // more than the rank's batch.
  const double group_tokens = static_cast<double>(in.group_rows) * seq;
  const double T = std::min(static_cast<double>(in.train_rows) * seq,
                            std::max(static_cast<double>(in.micro_batch_tokens), group_tokens));
  const double per_token_layer = 6.0 * s.hidden + 3.0 * s.heads * s.head_dim + 3.0 * s.kv_heads * s.head_dim + 4.0 * s.intermediate;
  // Unfused attention keeps scores and probabilities: heads x (tokens in the micro-batch) x (sequence).
  const double scores = in.fused_attention ? 0.0 : 2.0 * s.heads * T * std::min(seq, T) * cb;
  const double logits = static_cast<double>(in.chunk_tokens) * s.vocab * 4 * 3;
  double activations = 0;
  if (in.gradient_checkpointing) {
    activations = s.layers * T * s.hidden * cb + 2 * (T * per_token_layer * cb + scores) + logits;
    std::snprintf(d, sizeof d, "%.0f tokens: layer inputs + one layer recomputed, checkpointed", T);
  } else {
    activations = s.layers * (T * per_token_layer * cb + scores) + logits;
    std::snprintf(d, sizeof d, "%.0f tokens x %lld layers%s", T, static_cast<long long>(s.layers),
                  in.fused_attention ? "" : " (+ attention scores)");
  }
  add("activations", activations, d);

  const double resident = plan.bytes("weights") + plan.bytes("optimizer state") + plan.bytes("master weights") +
                          plan.bytes("teacher copy");
  plan.rollout_peak = resident + (in.zero_stage >= 2 ? 0 : plan.bytes("gradients")) + kv + plan.bytes("sampling buffers");
  plan.training_peak = resident + plan.bytes("gradients") + activations + plan.bytes("collective buffers");
  return plan;
}

std::string format_memory_plan(const MemoryPlan& plan, const MemoryPlanInputs& in, double budget) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "memory plan per rank (world size %d, zero_stage %d, %.3gB parameters):\n",
                in.world_size, in.zero_stage, static_cast<double>(in.shape.parameters()));
  out << line;
  for (const auto& item : plan.items) {
    std::snprintf(line, sizeof line, "  %-19s %10s  %s\n", item.name.c_str(), human(item.bytes).c_str(), item.detail.c_str());
    out << line;
  }
  std::snprintf(line, sizeof line, "  %-19s %10s  weights, optimizer, teacher, kv cache%s\n", "peak: rollouts",
                human(plan.rollout_peak).c_str(), in.zero_stage >= 2 ? "" : ", gradients");
  out << line;
  std::snprintf(line, sizeof line, "  %-19s %10s  weights, optimizer, teacher, gradients, activations\n",
                "peak: training", human(plan.training_peak).c_str());
  out << line;
  if (budget > 0) {
    std::snprintf(line, sizeof line, "  %-19s %10s  %s, %s usable (%.0f%%); peak uses %.0f%% of it\n", "available",
                  human(budget).c_str(), plan.peak() <= budget * kUsableFraction ? "fits" : "DOES NOT FIT",
                  human(budget * kUsableFraction).c_str(), 100 * kUsableFraction,
                  100.0 * plan.peak() / (budget * kUsableFraction));
    out << line;
  }
  return out.str();
}

std::string memory_shortfall(const MemoryPlanInputs& in, double budget, std::string& key) {
  const MemoryPlan plan = plan_memory(in);
  const double usable = budget * kUsableFraction;
  if (budget <= 0 || plan.peak() <= usable) return {};
  struct Candidate {
    std::string key, change;
    MemoryPlanInputs inputs;
  };
  std::vector<Candidate> candidates;
  auto candidate = [&](std::string k, std::string change, auto edit) {
    MemoryPlanInputs changed = in;
    edit(changed);
    candidates.push_back({std::move(k), std::move(change), changed});
  };
  if (!in.gradient_checkpointing)
    candidate("model.gradient_checkpointing", "true", [](MemoryPlanInputs& c) { c.gradient_checkpointing = true; });
  for (int stage = in.zero_stage + 1; stage <= 2; ++stage)
    if (in.world_size > 1 || stage == 1)
      candidate("distributed.zero_stage", std::to_string(stage), [stage](MemoryPlanInputs& c) { c.zero_stage = stage; });
  if (in.param_bytes == 4)
    candidate("model.dtype", "bfloat16", [](MemoryPlanInputs& c) { c.param_bytes = 2; c.compute_bytes = 2; });
  if (in.micro_batch_tokens >= 2048)
    candidate("optim.micro_batch_tokens", std::to_string(in.micro_batch_tokens / 2),
              [](MemoryPlanInputs& c) { c.micro_batch_tokens /= 2; });
  if (in.rollout_rows >= 2 * in.group_rows)
    candidate("rollout.prompts_per_step", "half of it", [](MemoryPlanInputs& c) {
      c.rollout_rows /= 2;
      c.train_rows /= 2;
    });
  if (in.eval_rows >= 2)
    candidate("eval.batch_prompts", "half of it", [](MemoryPlanInputs& c) { c.eval_rows /= 2; });
  {
    const int64_t slots = in.rollout_slots > 0 && in.rollout_slots < in.rollout_rows ? in.rollout_slots : in.rollout_rows;
    if (slots >= 2)
      candidate("rollout.max_batch_rows", std::to_string(slots / 2),
                [slots](MemoryPlanInputs& c) { c.rollout_slots = slots / 2; });
  }
  candidate("WORLD_SIZE", std::to_string(in.world_size * 2) + " with zero_stage 2", [](MemoryPlanInputs& c) {
    c.world_size *= 2;
    c.zero_stage = 2;
    c.rollout_rows = std::max<int64_t>(c.group_rows, c.rollout_rows / 2);
    c.train_rows = c.rollout_rows;
  });
  std::ostringstream out;
  char text[256];
  std::snprintf(text, sizeof text, "the memory plan needs %s per rank at its peak (%s) but %s are usable (%.0f%% of %s);",
                human(plan.peak()).c_str(), plan.rollout_peak > plan.training_peak ? "rollouts" : "training",
                human(usable).c_str(), 100 * kUsableFraction, human(budget).c_str());
  out << text << " each change alone gives:";
  key.clear();
  for (const auto& c : candidates) {
    const double peak = plan_memory(c.inputs).peak();
    std::snprintf(text, sizeof text, " %s=%s -> %s%s;", c.key.c_str(), c.change.c_str(), human(peak).c_str(),
                  peak <= usable ? " (fits)" : "");
    out << text;
    if (key.empty() && peak <= usable) key = c.key;
  }
  if (key.empty()) {
    // Nothing alone fits: point at the largest item.
    const MemoryPlan::Item* largest = &plan.items.front();
    for (const auto& item : plan.items)
      if (item.bytes > largest->bytes) largest = &item;
    key = largest->name == "kv cache"      ? "rollout.prompts_per_step"
          : largest->name == "activations" ? "optim.micro_batch_tokens"
                                           : "distributed.zero_stage";
  }
  out << " (distributed.memory_check: warn runs anyway; distributed.memory_per_rank_gb sets the budget)";
  return out.str();
}

int smallest_fitting_world_size(const TrainConfig& config, const ModelShape& shape, int64_t prompt_tokens,
                                bool fused_attention, double budget, int limit) {
  for (int n = 1; n <= limit; n *= 2) {
    if (plan_memory(memory_plan_inputs(config, shape, n, prompt_tokens, fused_attention)).peak() <= budget * kUsableFraction)
      return n;
  }
  return 0;
}

}  // namespace distil::trainer
