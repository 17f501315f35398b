// The DistIL training loop (DESIGN.md "Data flow of one training step"): prompts -> G samples per
// prompt -> env feedback -> teacher context and top-k -> student pass with the objective ->
// AdamW step; plus periodic evaluation, metrics JSONL, checkpoints with exact resume.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "trainer/config.h"
#include "trainer/model/model.h"

namespace distil::trainer {

class Trainer {
 public:
  // resume: "" (fresh run), "latest" (newest checkpoint-* in train.output_dir) or a checkpoint
  // directory. Loads the model, tokenizer, tasks, teacher and connects to the env endpoints.
  explicit Trainer(TrainConfig config, const std::string& resume = "");
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // One optimiser step (or, for off-policy GRPO, one batch of minibatch updates); returns the
  // metrics record that was also appended to metrics.jsonl.
  nlohmann::json step();
  // Steps until train.steps, with logging, periodic evaluation and checkpoints (and a final one).
  void run();
  // Evaluates on data.eval_tasks now; writes eval/step-N.json and returns the result.
  nlohmann::json evaluate_now();
  std::filesystem::path save_checkpoint();

  int64_t steps_done() const;
  model::CausalLM& model();
  const TrainConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Newest checkpoint-* directory under `output_dir` (empty path if none).
std::filesystem::path latest_checkpoint(const std::filesystem::path& output_dir);

}  // namespace distil::trainer
