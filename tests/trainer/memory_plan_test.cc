// The memory plan: its parameter count against real models' parameters, the shipped Qwen3-8B
// config against 4 x H200 and 80 GB cards, and the refusal's message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "trainer/config.h"
#include "trainer/memory_plan.h"
#include "trainer/model/model.h"

namespace distil::trainer {
namespace {
namespace fs = std::filesystem;

const fs::path kSource = DISTIL_SOURCE_DIR;

// The count the plan works from equals the parameters a model of that shape really has, for
// each family's layout (q/k norms or not, tied embeddings or not).
TEST(MemoryPlan, ParameterCountEqualsTheModelsOwn) {
  const fs::path dir = fs::path(DISTIL_BINARY_DIR) / "tests" / "trainer" / ("plan-" + std::to_string(getpid()));
  for (auto family : {model::Family::qwen3, model::Family::llama, model::Family::olmo}) {
    for (bool tied : {true, false}) {
      model::ModelConfig config;
      config.family = family;
      config.vocab_size = 97;
      config.hidden_size = 24;
      config.intermediate_size = 40;
      config.num_hidden_layers = 3;
      config.num_attention_heads = 4;
      config.num_key_value_heads = 2;
      config.head_dim = 8;
      config.tie_word_embeddings = tied;
      config.max_position_embeddings = 64;
      auto model = model::make_random(config, 3);
      fs::remove_all(dir);
      model::save_pretrained(model, dir, torch::kFloat32);
      int64_t real = 0;
      for (const auto& p : model->parameters()) real += p.numel();
      EXPECT_EQ(read_model_shape(dir).parameters(), real) << (tied ? "tied" : "untied");
    }
  }
  fs::remove_all(dir);
}

TEST(MemoryPlan, Qwen3_8BIsItsPublishedSize) {
  // Qwen3-8B's model card: 8.2B parameters; its bf16 safetensors hold 16,381,470,720 bytes.
  EXPECT_EQ(read_model_shape(kSource / "configs" / "models" / "qwen3-8b").parameters(), 8190735360LL);
}

TrainConfig shipped_8b_config(std::vector<std::string> overrides = {}) {
  std::ifstream in(kSource / "configs" / "qwen3_8b_4xh200.yaml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return load_config_text(text, overrides);
}

TEST(MemoryPlan, Qwen3_8BWithAnEmaTeacherAnd8kResponsesFitsOnFourH200) {
  const auto config = shipped_8b_config();
  const auto shape = read_model_shape(kSource / "configs" / "models" / "qwen3-8b");
  const auto inputs = memory_plan_inputs(config, shape, 4, 1024, /*fused_attention=*/true);
  EXPECT_TRUE(inputs.teacher_copy);
  EXPECT_EQ(inputs.new_tokens, 8192);
  const auto plan = plan_memory(inputs);
  std::string key;
  EXPECT_EQ(memory_shortfall(inputs, 141e9, key), "") << format_memory_plan(plan, inputs, 141e9);
  // Sharding divides the optimizer: 12 bytes a parameter over 4 ranks.
  EXPECT_NEAR(plan.bytes("optimizer state") + plan.bytes("master weights") / 2, 12.0 * shape.parameters() / 4, 1e3);
  EXPECT_DOUBLE_EQ(plan.bytes("weights"), 2.0 * shape.parameters());
  // Unsharded, the same run does not fit, and the refusal names zero_stage as what fixes it.
  const auto unsharded = memory_plan_inputs(shipped_8b_config({"distributed.zero_stage=0"}), shape, 4, 1024, true);
  const std::string message = memory_shortfall(unsharded, 141e9, key);
  EXPECT_EQ(key, "distributed.zero_stage") << message;
  EXPECT_NE(message.find("distributed.zero_stage=1"), std::string::npos) << message;
  EXPECT_NE(message.find("(fits)"), std::string::npos) << message;
}

TEST(MemoryPlan, On80GBCardsTheWorldSizeItNeedsIsFound) {
  const auto shape = read_model_shape(kSource / "configs" / "models" / "qwen3-8b");
  // Groups of 4 x 9k tokens: the unshardable part alone exceeds 72 GB; no world size helps.
  EXPECT_EQ(smallest_fitting_world_size(shipped_8b_config(), shape, 1024, true, 80e9), 0);
  // Groups of 2 in 8k-token micro-batches: 16 ranks.
  const auto pairs = shipped_8b_config({"rollout.group_size=2", "optim.micro_batch_tokens=8192"});
  EXPECT_EQ(smallest_fitting_world_size(pairs, shape, 1024, true, 80e9), 16);
  // On H200s the shipped config needs 4.
  EXPECT_EQ(smallest_fitting_world_size(shipped_8b_config(), shape, 1024, true, 141e9), 4);
}

TEST(MemoryPlan, GradientCheckpointingAndStageTwoLowerTheirPeaks) {
  const auto shape = read_model_shape(kSource / "configs" / "models" / "qwen3-8b");
  auto base = memory_plan_inputs(shipped_8b_config({"model.gradient_checkpointing=false"}), shape, 4, 1024, true);
  auto checkpointed = base;
  checkpointed.gradient_checkpointing = true;
  EXPECT_LT(plan_memory(checkpointed).training_peak, plan_memory(base).training_peak / 2);
  auto stage1 = checkpointed;
  stage1.zero_stage = 1;
  // Stage 2 frees the gradients before rollouts; stage 1 keeps them.
  EXPECT_NEAR(plan_memory(stage1).rollout_peak - plan_memory(checkpointed).rollout_peak, 2.0 * shape.parameters(), 1e3);
  // Unfused attention (LibTorch 1.13) keeps score matrices: more activation memory.
  auto unfused = checkpointed;
  unfused.fused_attention = false;
  EXPECT_GT(plan_memory(unfused).bytes("activations"), plan_memory(checkpointed).bytes("activations"));
}

// Continuous batching (rollout.max_batch_rows): the KV cache holds the slots, each with room for
// the prompt and twice max_new_tokens (the spare columns compaction needs), not every row.
TEST(MemoryPlan, RolloutSlotsBoundTheKvCache) {
  const auto shape = read_model_shape(kSource / "configs" / "models" / "qwen3-8b");
  auto all_rows = memory_plan_inputs(shipped_8b_config({"eval.batch_prompts=1"}), shape, 4, 1024, true);
  auto slots = memory_plan_inputs(shipped_8b_config({"eval.batch_prompts=1", "rollout.max_batch_rows=8"}),
                                  shape, 4, 1024, true);
  ASSERT_GT(all_rows.rollout_rows, 8);
  EXPECT_EQ(slots.rollout_slots, 8);
  const double per_token_row = plan_memory(all_rows).bytes("kv cache") /
                               (static_cast<double>(all_rows.rollout_rows) * (all_rows.prompt_tokens + all_rows.new_tokens));
  EXPECT_NEAR(plan_memory(slots).bytes("kv cache"), per_token_row * 8 * (slots.prompt_tokens + 2 * slots.new_tokens), 1.0);
  EXPECT_LT(plan_memory(slots).rollout_peak, plan_memory(all_rows).rollout_peak);
  // A limit of at least the rows changes nothing.
  auto loose = memory_plan_inputs(shipped_8b_config({"eval.batch_prompts=1", "rollout.max_batch_rows=100000"}),
                                  shape, 4, 1024, true);
  EXPECT_DOUBLE_EQ(plan_memory(loose).bytes("kv cache"), plan_memory(all_rows).bytes("kv cache"));
}

TEST(MemoryPlan, ConfigJsonErrorsNameTheField) {
  const fs::path file = fs::path(DISTIL_BINARY_DIR) / "tests" / "trainer" / ("bad-config-" + std::to_string(getpid()) + ".json");
  std::ofstream(file) << R"({"vocab_size": 10, "hidden_size": -4})";
  try {
    read_model_shape(file);
    FAIL() << "a negative hidden_size was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("hidden_size"), std::string::npos) << e.what();
  }
  fs::remove(file);
  EXPECT_THROW(read_model_shape(file), std::runtime_error);  // missing file
}

}  // namespace
}  // namespace distil::trainer
