// End to end on CPU: a tiny random Qwen3-style model saved as a real Hugging Face directory, taught
// the answer format by a few SFT steps on reference solutions, then trained for a few steps with
// every objective against a real `distil-env serve` started here on loopback.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "trainer/config.h"
#include "trainer/model/model.h"
#include "trainer/text/tokenizer.h"
#include "trainer/trainer.h"

namespace distil::trainer {
namespace {
namespace fs = std::filesystem;

struct EnvServer {
  pid_t pid = -1;
  std::string url;
  std::string error;
};

// Starts `distil-env serve --port 0` and reads the port it prints.
EnvServer start_env_server(const fs::path& tasks) {
  EnvServer server;
  const fs::path binary = fs::path(DISTIL_BINARY_DIR) / "env_server" / "distil-env";
  if (!fs::exists(binary)) {
    server.error = "distil-env not built at " + binary.string();
    return server;
  }
  int out[2];
  if (pipe(out) != 0) {
    server.error = "pipe failed";
    return server;
  }
  server.pid = fork();
  if (server.pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(binary.c_str(), binary.c_str(), "serve", "--tasks", tasks.c_str(), "--host", "127.0.0.1", "--port",
          "0", "--no-sandbox", "--access-log", "off", "--drain-timeout", "0", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string line;
  pollfd pfd{out[0], POLLIN, 0};
  char ch;
  while (line.find('\n') == std::string::npos) {
    if (poll(&pfd, 1, 30000) <= 0 || read(out[0], &ch, 1) != 1) break;
    line += ch;
  }
  close(out[0]);
  std::smatch m;
  if (std::regex_search(line, m, std::regex("listening on (http://[0-9.]+:[0-9]+)"))) {
    server.url = m[1];
  } else {
    server.error = "distil-env did not print its address; got: " + line;
  }
  return server;
}

class TrainEndToEnd : public ::testing::Test {
 protected:
  static inline fs::path root;
  static inline fs::path tasks_file;
  static inline fs::path base_model;
  static inline EnvServer server;
  static inline std::string setup_error;

  static void SetUpTestSuite() {
    root = fs::path(DISTIL_BINARY_DIR) / "tests" / "trainer" / ("e2e-" + std::to_string(getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    tasks_file = root / "tasks.jsonl";
    {
      std::ofstream out(tasks_file);
      out << R"({"id": "add-1", "domain": "math", "prompt": "1+1=?", "answer": "2"})" << "\n"
          << R"({"id": "add-2", "domain": "math", "prompt": "2+2=?", "answer": "4"})" << "\n"
          << R"({"id": "add-3", "domain": "math", "prompt": "3+3=?", "answer": "6"})" << "\n";
    }
    server = start_env_server(tasks_file);
    if (server.url.empty()) {
      setup_error = server.error;
      return;
    }
    // A tiny random model with a byte-level tokenizer, as a real HF directory.
    const fs::path random_dir = root / "random-model";
    text::ByteLevelTokenizerSpec spec;
    text::write_byte_level_tokenizer(random_dir, spec);
    auto tokenizer = text::Tokenizer::from_model_dir(random_dir);
    model::ModelConfig config;
    config.family = model::Family::qwen3;
    config.vocab_size = tokenizer.vocab_size();
    config.hidden_size = 32;
    config.intermediate_size = 64;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    config.head_dim = 8;
    config.tie_word_embeddings = true;
    config.max_position_embeddings = 256;
    config.eos_token_id = tokenizer.eos_token_ids().front();
    config.pad_token_id = tokenizer.pad_token_id();
    auto model = model::make_random(config, 11);
    model::save_pretrained(model, random_dir, torch::kFloat32);

    // Teach the answer format (and, partly, the answers) with SFT on reference solutions so that
    // sampled rollouts get mixed rewards.
    auto sft = load_config_text("", {"model.path=" + random_dir.string(), "data.train_tasks=[" + tasks_file.string() + "]",
                                     "algo.objective=sft", "algo.sft_source=reference", "rollout.prompts_per_step=3",
                                     "optim.lr=0.01", "optim.grad_clip=0", "train.steps=80", "train.progress=false",
                                     "train.log_every=1000", "checkpoint.every=0", "checkpoint.keep_last=1",
                                     "train.output_dir=" + (root / "sft").string()});
    Trainer pretrain(sft);
    pretrain.run();
    base_model = latest_checkpoint(root / "sft");
  }

  static void TearDownTestSuite() {
    if (server.pid > 0) {
      kill(server.pid, SIGTERM);
      waitpid(server.pid, nullptr, 0);
    }
    fs::remove_all(root);
  }

  void SetUp() override {
    if (!setup_error.empty()) GTEST_SKIP() << setup_error;
    ASSERT_FALSE(base_model.empty()) << "SFT warm-up wrote no checkpoint";
  }

  TrainConfig config_for(const std::string& objective, const std::string& run,
                         std::vector<std::string> extra = {}) {
    std::vector<std::string> overrides = {
        "model.path=" + base_model.string(), "data.train_tasks=[" + tasks_file.string() + "]",
        "env.endpoints=[" + server.url + "]", "algo.objective=" + objective, "rollout.prompts_per_step=2",
        "rollout.group_size=4", "rollout.max_new_tokens=32", "algo.top_k=5", "algo.sdpo_top_k=8",
        "optim.lr=0.001", "train.steps=2", "train.progress=false", "checkpoint.every=0",
        "train.output_dir=" + (root / run).string()};
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    return load_config_text("", overrides);
  }

  static std::vector<torch::Tensor> snapshot(model::CausalLM& m) {
    std::vector<torch::Tensor> out;
    for (const auto& p : m->parameters()) out.push_back(p.detach().clone());
    return out;
  }

  static double max_change(const std::vector<torch::Tensor>& before, model::CausalLM& m) {
    double change = 0.0;
    auto params = m->parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
      change = std::max(change, (params[i].detach() - before[i]).abs().max().item<double>());
    }
    return change;
  }
};

class EveryObjective : public TrainEndToEnd, public ::testing::WithParamInterface<std::string> {};

TEST_P(EveryObjective, StepsAreFiniteAndChangeTheParameters) {
  Trainer trainer(config_for(GetParam(), "run-" + GetParam()));
  auto before = snapshot(trainer.model());
  double reward_spread = 0.0;
  for (int i = 0; i < 2; ++i) {
    auto record = trainer.step();
    SCOPED_TRACE(record.dump());
    ASSERT_TRUE(std::isfinite(record["loss"].get<double>()));
    EXPECT_EQ(record["failed_feedback"], 0);
    EXPECT_EQ(record["rollouts"], 8);
    EXPECT_TRUE(record["update_applied"].get<bool>());
    reward_spread = std::max(reward_spread, record["reward_mean"].get<double>() *
                                                (1.0 - record["reward_mean"].get<double>()));
  }
  EXPECT_GT(max_change(before, trainer.model()), 0.0);
  EXPECT_TRUE(fs::exists(root / ("run-" + GetParam()) / "metrics.jsonl"));
}

INSTANTIATE_TEST_SUITE_P(Objectives, EveryObjective,
                         ::testing::Values("distil", "ce", "grpo", "sdpo", "opsd", "sft"),
                         [](const auto& info) { return info.param; });

TEST_F(TrainEndToEnd, OffPolicyGrpoRunsSeveralUpdatesPerBatch) {
  Trainer trainer(config_for("grpo", "grpo-off", {"algo.off_policy_minibatches=2"}));
  auto record = trainer.step();
  EXPECT_TRUE(std::isfinite(record["loss"].get<double>()));
  EXPECT_TRUE(record.contains("ratio_mean"));
}

TEST_F(TrainEndToEnd, DistilReportsItsParts) {
  Trainer trainer(config_for("distil", "distil-parts"));
  auto record = trainer.step();
  ASSERT_TRUE(record.contains("local"));
  ASSERT_TRUE(record.contains("future_credit"));
  EXPECT_GT(record["ce_per_token"].get<double>(), 0.0);
  EXPECT_LT(record["masked_rollouts"].get<int64_t>(), 8);
  for (const char* phase : {"generation", "feedback", "teacher", "student", "total"}) {
    EXPECT_TRUE(record["time"].contains(phase)) << phase;
  }
}

TEST_F(TrainEndToEnd, ResumeReproducesTheNextStepExactly) {
  auto config = config_for("distil", "resume-a", {"train.steps=3", "checkpoint.every=2", "checkpoint.keep_last=5"});
  Trainer straight(config);
  straight.run();
  ASSERT_EQ(straight.steps_done(), 3);
  const fs::path checkpoint = root / "resume-a" / "checkpoint-000002";
  ASSERT_TRUE(fs::exists(checkpoint / "model.safetensors"));
  ASSERT_TRUE(fs::exists(checkpoint / "optimizer.pt"));

  auto resumed_config = config_for("distil", "resume-b", {"train.steps=3"});
  Trainer resumed(resumed_config, checkpoint.string());
  EXPECT_EQ(resumed.steps_done(), 2);
  resumed.run();
  auto a = straight.model()->parameters();
  auto b = resumed.model()->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].cpu(), b[i].cpu())) << "parameter " << i << " differs after resume";
  }
  // And the checkpoint is an HF directory other tools can load.
  auto reloaded = model::load_pretrained(root / "resume-a" / "checkpoint-000003");
  auto c = reloaded->parameters();
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].cpu(), c[i].cpu()));
}

TEST_F(TrainEndToEnd, FailedFeedbackIsDroppedNotCountedAsZeroReward) {
  // A port nobody listens on: every request fails after its attempts.
  auto config = config_for("distil", "dead-env", {"env.endpoints=[http://127.0.0.1:9]", "env.max_attempts=1",
                                                  "env.request_timeout_s=2"});
  Trainer trainer(config);
  auto record = trainer.step();
  EXPECT_EQ(record["failed_feedback"], 8);
  EXPECT_EQ(record["rollouts"], 0);
  EXPECT_EQ(record["reward_mean"], 0.0);
}

TEST_F(TrainEndToEnd, EvaluationReportsPassAtK) {
  auto config = config_for("distil", "eval", {"data.eval_tasks=[" + tasks_file.string() + "]", "eval.samples=4",
                                              "eval.k=[1, 4]", "eval.temperature=1.0"});
  Trainer trainer(config);
  auto result = trainer.evaluate_now();
  const auto& overall = result["metrics"]["overall"];
  EXPECT_EQ(overall["prompts"], 3);
  EXPECT_EQ(overall["samples"], 12);
  for (const char* key : {"avg@n", "pass@1", "pass@4", "maj@4", "best@4"}) {
    ASSERT_TRUE(overall.contains(key)) << key;
    EXPECT_GE(overall[key].get<double>(), 0.0);
    EXPECT_LE(overall[key].get<double>(), 1.0);
  }
  EXPECT_GE(overall["pass@4"].get<double>(), overall["pass@1"].get<double>());
  EXPECT_TRUE(result["metrics"]["per_domain"].contains("math"));
}

}  // namespace
}  // namespace distil::trainer
