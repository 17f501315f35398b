// End to end on CPU: a tiny random Qwen3-style model saved as a real Hugging Face directory, taught
// the answer format by a few SFT steps on reference solutions, then trained for a few steps with
// every objective against a real `distil-env serve` started here on loopback.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "tests/support/free_port.h"
#include "tests/trainer/tfevents_reader.h"
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

// Starts `distil-env serve --port <port>` (0: any free one) and reads the port it prints.
EnvServer start_env_server(const fs::path& tasks, const std::string& port = "0") {
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
    // Dies with the test (a crashed test must not leave a server holding CTest's output pipe).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(binary.c_str(), binary.c_str(), "serve", "--tasks", tasks.c_str(), "--host", "127.0.0.1", "--port",
          port.c_str(), "--no-sandbox", "--access-log", "off", "--drain-timeout", "0", static_cast<char*>(nullptr));
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

void stop_server(EnvServer& server) {
  if (server.pid > 0) {
    kill(server.pid, SIGKILL);
    waitpid(server.pid, nullptr, 0);
    server.pid = -1;
  }
}

// A server of the test's own, killed however the test ends (a server left running would keep
// CTest's output pipe open).
struct OwnServer {
  EnvServer server;
  explicit OwnServer(const fs::path& tasks, const std::string& port = "0") : server(start_env_server(tasks, port)) {}
  ~OwnServer() { stop_server(server); }
};

std::string port_of(const std::string& url) { return url.substr(url.rfind(':') + 1); }

std::vector<int64_t> steps_in(const fs::path& metrics) {
  std::vector<int64_t> steps;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && !j.contains("eval") && !j.value("failed", false))
      steps.push_back(j["step"].get<int64_t>());
  }
  return steps;
}

// A run's TensorBoard event files show what its metrics.jsonl holds, read by the independent
// reader and, where installed, by the real crc32c + protobuf libraries (tfevents_peer.py).
// Returns why the real reader could not run ("" when it did).
std::string expect_tensorboard_shows_metrics(const fs::path& dir) {
  const auto files = test::event_files_in(dir);
  EXPECT_FALSE(files.empty()) << "no TensorBoard event file in " << dir;
  std::vector<std::vector<test::ReadEvent>> events;
  for (const auto& f : files) events.push_back(test::read_event_file(f));
  const auto expected = test::expected_from_metrics(dir / "metrics.jsonl");
  EXPECT_FALSE(expected.empty());
  EXPECT_EQ(test::shown_by_tensorboard(events), expected);
  const auto peer = test::run_peer_reader(files);
  if (!peer.skip_reason.empty()) return peer.skip_reason;
  EXPECT_EQ(test::shown_by_tensorboard(test::peer_events(peer.files)), expected) << "read by tfevents_peer.py";
  return "";
}

TEST_F(TrainEndToEnd, RefusesToStartWithoutAFeedbackServer) {
  // Nothing listens there: the run must stop at start, naming the endpoint, not train on nothing.
  auto config = config_for("distil", "dead-env", {"env.endpoints=[http://127.0.0.1:9]"});
  try {
    Trainer trainer(config);
    ADD_FAILURE() << "a trainer started with no reachable endpoint";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("http://127.0.0.1:9"), std::string::npos) << e.what();
  }
}

// A step whose every rollout lost its feedback is not a step: no update, no schedule step, its
// values null, and it is made again; once the endpoint is back the run is exactly the run that
// never saw the fault. Too many such steps in a row stop the run, naming the endpoints.
TEST_F(TrainEndToEnd, AStepThatLostAllItsFeedbackDoesNotCountAndIsMadeAgain) {
  Trainer unfaulted(config_for("distil", "unfaulted", {"train.steps=3"}));
  for (int i = 0; i < 2; ++i) unfaulted.step();

  OwnServer own_guard(tasks_file);
  EnvServer& own = own_guard.server;
  ASSERT_FALSE(own.url.empty()) << own.error;
  Trainer faulted(config_for("distil", "faulted",
                             {"train.steps=3", "env.endpoints=[" + own.url + "]", "env.max_attempts=1",
                              "env.request_timeout_s=5", "train.max_failed_steps=3"}));
  EXPECT_TRUE(faulted.step()["update_applied"].get<bool>());
  stop_server(own);
  auto failed = faulted.step();
  SCOPED_TRACE(failed.dump());
  EXPECT_TRUE(failed.value("failed", false));
  EXPECT_EQ(faulted.steps_done(), 1);
  EXPECT_EQ(failed["failed_feedback"], 8);
  EXPECT_FALSE(failed["update_applied"].get<bool>());
  EXPECT_TRUE(failed["reward_mean"].is_null());
  EXPECT_TRUE(failed["accuracy"].is_null());
  EXPECT_TRUE(failed["loss"].is_null());

  OwnServer back_guard(tasks_file, port_of(own.url));
  EnvServer& back = back_guard.server;
  ASSERT_EQ(back.url, own.url) << back.error;
  auto retried = faulted.step();
  EXPECT_FALSE(retried.value("failed", false)) << retried.dump();
  EXPECT_EQ(faulted.steps_done(), 2);
  auto a = unfaulted.model()->parameters();
  auto b = faulted.model()->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i << " differs from the unfaulted run";
  EXPECT_EQ(steps_in(root / "faulted" / "metrics.jsonl"), (std::vector<int64_t>{1, 2}));
  // The step that did not count is not in TensorBoard either.
  const std::string no_peer = expect_tensorboard_shows_metrics(root / "faulted");
  EXPECT_EQ(test::shown_by_tensorboard({test::read_event_file(test::event_files_in(root / "faulted").at(0))})
                .at("train/loss")
                .size(),
            2u);

  stop_server(back);
  EXPECT_TRUE(faulted.step().value("failed", false));
  EXPECT_TRUE(faulted.step().value("failed", false));
  try {
    faulted.step();
    ADD_FAILURE() << "a third failed step in a row did not stop the run";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(own.url), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("train.max_failed_steps"), std::string::npos) << e.what();
  }
  EXPECT_EQ(faulted.steps_done(), 2);
  if (!no_peer.empty()) GTEST_SKIP() << "TensorBoard files checked by the independent reader only: " << no_peer;
}

TEST_F(TrainEndToEnd, EvaluationWhoseFeedbackFailedIsAnErrorNotAZero) {
  OwnServer own_guard(tasks_file);
  EnvServer& own = own_guard.server;
  ASSERT_FALSE(own.url.empty()) << own.error;
  Trainer trainer(config_for("distil", "eval-dead",
                             {"data.eval_tasks=[" + tasks_file.string() + "]", "env.endpoints=[" + own.url + "]",
                              "env.max_attempts=1", "eval.samples=2", "eval.k=[1, 2]"}));
  stop_server(own);
  auto result = trainer.evaluate_now();
  ASSERT_TRUE(result.contains("error")) << result.dump();
  EXPECT_FALSE(result.contains("metrics"));
  EXPECT_NE(result["error"].get<std::string>().find("6 of 6 samples"), std::string::npos) << result.dump();
  std::ifstream in(root / "eval-dead" / "metrics.jsonl");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("eval_failed"), std::string::npos) << all;
  EXPECT_EQ(all.find("avg@n"), std::string::npos) << "a failed evaluation was recorded as a number: " << all;
}

// A resume re-runs the steps after its checkpoint: their old records go, so each step is in
// metrics.jsonl once; a save killed midway (checkpoint-N.tmp) is removed at start.
TEST_F(TrainEndToEnd, ResumeKeepsEachStepOnceAndRemovesHalfWrittenCheckpoints) {
  const fs::path dir = root / "resume-truncate";
  {
    Trainer first(config_for("distil", "resume-truncate", {"train.steps=3", "checkpoint.every=2", "checkpoint.keep_last=5"}));
    first.run();
  }
  ASSERT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(test::event_files_in(dir).size(), 1u);
  fs::create_directories(dir / "checkpoint-000004.tmp");
  std::ofstream(dir / "checkpoint-000004.tmp" / "model.safetensors") << "half";
  Trainer resumed(config_for("distil", "resume-truncate", {"train.steps=3"}), (dir / "checkpoint-000002").string());
  EXPECT_FALSE(fs::exists(dir / "checkpoint-000004.tmp"));
  EXPECT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2}));
  resumed.run();
  EXPECT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(latest_checkpoint(dir), dir / "checkpoint-000003");
  // TensorBoard: a second event file, which starts by purging the steps made again (3), so what
  // TensorBoard shows is metrics.jsonl, each step once.
  const auto files = test::event_files_in(dir);
  ASSERT_EQ(files.size(), 2u);
  const auto second = test::read_event_file(files[1]);
  ASSERT_GE(second.size(), 2u);
  EXPECT_EQ(second[1].session_status, 1);
  EXPECT_EQ(second[1].step, 3);
  const std::string no_peer = expect_tensorboard_shows_metrics(dir);
  if (!no_peer.empty()) GTEST_SKIP() << "TensorBoard files checked by the independent reader only: " << no_peer;
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
  // The evaluation's numbers are TensorBoard's eval/ scalars at its step.
  const auto shown = test::shown_by_tensorboard({test::read_event_file(test::event_files_in(root / "eval").at(0))});
  ASSERT_TRUE(shown.count("eval/pass@4")) << "tags: " << nlohmann::json(shown).dump();
  EXPECT_EQ(shown.at("eval/pass@4").at(0), (std::pair<int64_t, float>{0, overall["pass@4"].get<float>()}));
  const std::string no_peer = expect_tensorboard_shows_metrics(root / "eval");
  if (!no_peer.empty()) GTEST_SKIP() << "TensorBoard files checked by the independent reader only: " << no_peer;
}

// --- data parallel: distil-train itself, started as torchrun starts it -----------------------------

struct Launch {
  std::vector<std::string> overrides;
  int world_size = 1;
  std::string resume;  // --resume
};

// Runs `distil-train train` as `world_size` processes with torchrun's environment variables
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and returns "" when
// every process exited 0, else the failures with the end of each one's log.
std::string run_distil_train(const Launch& launch, const fs::path& logs) {
  const fs::path binary = fs::path(DISTIL_BINARY_DIR) / "trainer" / "distil-train";
  if (!fs::exists(binary)) return "distil-train not built at " + binary.string();
  fs::create_directories(logs);
  const std::string master_port = std::to_string(test_support::free_tcp_port());
  std::vector<pid_t> children;
  for (int rank = 0; rank < launch.world_size; ++rank) {
    const fs::path log = logs / ("rank" + std::to_string(rank) + ".log");
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (launch.world_size > 1) {
        setenv("RANK", std::to_string(rank).c_str(), 1);
        setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
        setenv("WORLD_SIZE", std::to_string(launch.world_size).c_str(), 1);
        setenv("LOCAL_WORLD_SIZE", std::to_string(launch.world_size).c_str(), 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", master_port.c_str(), 1);
      }
      // Two ranks on two cores: one thread each, as torchrun's OMP_NUM_THREADS=1 default.
      setenv("OMP_NUM_THREADS", "1", 1);
      FILE* out = std::fopen(log.c_str(), "w");
      if (out) {
        dup2(fileno(out), STDERR_FILENO);
        dup2(fileno(out), STDOUT_FILENO);
      }
      std::vector<std::string> args{binary.string(), "train"};
      if (!launch.resume.empty()) {
        args.push_back("--resume");
        args.push_back(launch.resume);
      }
      for (const auto& o : launch.overrides) {
        args.push_back("--set");
        args.push_back(o);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    children.push_back(pid);
  }
  std::string failures;
  for (int rank = 0; rank < launch.world_size; ++rank) {
    int status = 0;
    waitpid(children[rank], &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    std::ifstream in(logs / ("rank" + std::to_string(rank) + ".log"));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    failures += "rank " + std::to_string(rank) + " exited with status " + std::to_string(status) + ":\n" +
                text.substr(text.size() > 3000 ? text.size() - 3000 : 0) + "\n";
  }
  return failures;
}

std::vector<nlohmann::json> training_records(const fs::path& metrics) {
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("loss") && !record.value("failed", false)) out.push_back(record);
  }
  return out;
}

std::vector<torch::Tensor> checkpoint_weights(const fs::path& run) {
  std::vector<torch::Tensor> out;
  const auto checkpoint = latest_checkpoint(run);
  if (checkpoint.empty()) return out;
  auto model = model::load_pretrained(checkpoint);
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

double max_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  return worst;
}

class DataParallelEndToEnd : public TrainEndToEnd {
 protected:
  std::vector<std::string> overrides_for(const std::string& objective, const std::string& run,
                                         std::vector<std::string> extra = {}) {
    std::vector<std::string> overrides = {
        "model.path=" + base_model.string(), "data.train_tasks=[" + tasks_file.string() + "]",
        "env.endpoints=[" + server.url + "]", "algo.objective=" + objective, "rollout.prompts_per_step=4",
        "model.device=cpu",  // Gloo on CPU; on a one-GPU machine two ranks would need two GPUs
        "rollout.group_size=3", "rollout.max_new_tokens=24", "algo.top_k=5", "optim.lr=0.003",
        "train.steps=3", "train.progress=false", "checkpoint.every=0", "train.output_dir=" + (root / run).string()};
    overrides.insert(overrides.end(), extra.begin(), extra.end());
    return overrides;
  }

  // The per-step records of two runs: the same rollouts (counts, rewards, lengths: sampling is
  // seeded per prompt, not per rank) and the same loss and update up to reduction-order rounding.
  static void expect_same_steps(const fs::path& a, const fs::path& b) {
    const auto ra = training_records(a / "metrics.jsonl"), rb = training_records(b / "metrics.jsonl");
    ASSERT_EQ(ra.size(), rb.size());
    ASSERT_FALSE(ra.empty());
    for (std::size_t i = 0; i < ra.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(i + 1));
      for (const char* exact : {"rollouts", "reward_mean", "accuracy", "response_length", "masked_rollouts"}) {
        EXPECT_EQ(ra[i][exact], rb[i][exact]) << exact;
      }
      if (ra[i].contains("teacher_contexts")) EXPECT_EQ(ra[i]["teacher_contexts"], rb[i]["teacher_contexts"]);
      for (const char* close : {"loss", "grad_norm"}) {
        const double x = ra[i][close].get<double>(), y = rb[i][close].get<double>();
        EXPECT_NEAR(x, y, 1e-5 + 1e-4 * std::abs(x)) << close;
      }
    }
  }
};

class DataParallelObjective : public DataParallelEndToEnd, public ::testing::WithParamInterface<std::string> {};

TEST_P(DataParallelObjective, TwoProcessesTrainAsOneWithTheSameGlobalBatch) {
  std::string objective = GetParam();
  std::vector<std::string> extra;
  if (objective == "grpo_off") {
    objective = "grpo";
    extra.push_back("algo.off_policy_minibatches=2");
  }
  // The evaluation at step 3 is split over the ranks by batch (three batches of one prompt: rank
  // 0 takes two) and must give one process's numbers exactly.
  for (const char* e : {"eval.every=3", "eval.batch_prompts=1", "eval.samples=2", "eval.k=[1, 2]"}) extra.push_back(e);
  extra.push_back("data.eval_tasks=[" + tasks_file.string() + "]");
  const std::string name = "dp-" + GetParam();
  auto one = overrides_for(objective, name + "-1", extra);
  auto two = overrides_for(objective, name + "-2", extra);
  ASSERT_EQ(run_distil_train({one, 1}, root / (name + "-1-logs")), "");
  ASSERT_EQ(run_distil_train({two, 2}, root / (name + "-2-logs")), "");
  expect_same_steps(root / (name + "-1"), root / (name + "-2"));
  EXPECT_LT(max_difference(checkpoint_weights(root / (name + "-1")), checkpoint_weights(root / (name + "-2"))), 1e-5);
  auto eval_of = [&](const std::string& run) {
    std::ifstream in(root / run / "eval" / "step-000003.json");
    return nlohmann::json::parse(in, nullptr, false);
  };
  const auto eval_one = eval_of(name + "-1"), eval_two = eval_of(name + "-2");
  ASSERT_TRUE(eval_one.is_object() && eval_one.contains("metrics"));
  EXPECT_EQ(eval_one["metrics"], eval_two["metrics"]);
  EXPECT_EQ(eval_one["samples"].size(), 6u);
  EXPECT_EQ(eval_one["samples"], eval_two["samples"]);
  // Rank 1 said what it runs on.
  std::ifstream log(root / (name + "-2-logs") / "rank1.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("rank 1 of 2, local rank 1 of 2, device cpu, backend gloo"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Objectives, DataParallelObjective, ::testing::Values("distil", "grpo", "grpo_off"),
                         [](const auto& info) { return info.param; });

TEST_F(DataParallelEndToEnd, ShardedOptimizerStateTrainsAsUnsharded) {
  ASSERT_EQ(run_distil_train({overrides_for("distil", "zero0"), 2}, root / "zero0-logs"), "");
  const auto unsharded = checkpoint_weights(root / "zero0");
  for (const char* stage : {"1", "2"}) {
    SCOPED_TRACE(std::string("zero_stage ") + stage);
    const std::string run = std::string("zero") + stage;
    ASSERT_EQ(run_distil_train({overrides_for("distil", run, {std::string("distributed.zero_stage=") + stage}), 2},
                               root / (run + "-logs")),
              "");
    expect_same_steps(root / "zero0", root / run);
    EXPECT_LT(max_difference(unsharded, checkpoint_weights(root / run)), 1e-5);
    // One optimizer shard per rank, no full optimizer state.
    const auto checkpoint = latest_checkpoint(root / run);
    EXPECT_TRUE(fs::exists(checkpoint / "optimizer-rank0-of-2.pt"));
    EXPECT_TRUE(fs::exists(checkpoint / "optimizer-rank1-of-2.pt"));
    EXPECT_FALSE(fs::exists(checkpoint / "optimizer.pt"));
  }
}

TEST_F(DataParallelEndToEnd, TwoProcessesResumeAsIfNeverStopped) {
  for (const char* stage : {"0", "2"}) {
    SCOPED_TRACE(std::string("zero_stage ") + stage);
    const std::string zero = std::string("distributed.zero_stage=") + stage;
    const std::string straight = std::string("resume2-straight-") + stage, part = std::string("resume2-part-") + stage;
    ASSERT_EQ(run_distil_train({overrides_for("distil", straight, {zero, "train.steps=3"}), 2}, root / (straight + "-logs")), "");
    ASSERT_EQ(run_distil_train({overrides_for("distil", part, {zero, "train.steps=2"}), 2}, root / (part + "-logs")), "");
    ASSERT_EQ(run_distil_train({overrides_for("distil", part, {zero, "train.steps=3"}), 2, "latest"},
                               root / (part + "-resume-logs")),
              "");
    const auto a = checkpoint_weights(root / straight), b = checkpoint_weights(root / part);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
    expect_same_steps(root / straight, root / part);
  }
}

TEST_F(DataParallelEndToEnd, TheMemoryPlanRefusesARunThatCannotFit) {
  auto config = config_for("distil", "too-big", {"distributed.memory_per_rank_gb=0.0001"});
  try {
    Trainer trainer(config);
    FAIL() << "a run needing more than 100 kB per rank started";
  } catch (const ConfigError& e) {
    EXPECT_FALSE(e.key().empty());
    EXPECT_NE(std::string(e.what()).find("per rank"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("distributed.memory_check: warn"), std::string::npos) << e.what();
  }
  // warn runs anyway.
  auto warned = config_for("distil", "too-big-warned",
                           {"distributed.memory_per_rank_gb=0.0001", "distributed.memory_check=warn", "train.steps=1"});
  Trainer trainer(warned);
  trainer.run();
  EXPECT_EQ(trainer.steps_done(), 1);
}

}  // namespace
}  // namespace distil::trainer
