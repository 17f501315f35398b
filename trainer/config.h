// The training configuration: one YAML document with every setting (defaults in
// configs/default.yaml, embedded at build time as kDefaultConfigYaml), overridden by a user file
// and by `--set key.sub=value`. Unknown keys and bad values are errors naming the key. Every key
// is one row of the table in config.cc (name, type, default, doc, check).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/objectives.h"

namespace distil::trainer {

class ConfigError : public std::runtime_error {
 public:
  ConfigError(const std::string& key, const std::string& problem)
      : std::runtime_error(key + ": " + problem), key_(key) {}
  const std::string& key() const { return key_; }

 private:
  std::string key_;
};

struct ModelSection {
  std::string path;
  std::string dtype = "float32";
  std::string compute_dtype;  // "" = the parameters' dtype
  std::string device = "auto";
  bool gradient_checkpointing = false;
  std::string chat_format = "auto";
  bool enable_thinking = true;
  std::string system_prompt;
};

struct DataSection {
  std::vector<std::string> train_tasks;
  std::vector<std::string> eval_tasks;
  std::vector<std::string> domains;  // empty: all
  uint64_t shuffle_seed = 0;
};

struct EnvSection {
  std::vector<std::string> endpoints;
  std::string policy = "round_robin";
  double request_timeout_s = 120.0;
  int max_attempts = 6;
  double overload_wait_s = 120.0;
  std::string auth_token_env;
  bool inline_tasks = true;
  nlohmann::json options = nlohmann::json::object();
};

struct RolloutSection {
  int prompts_per_step = 8;
  int group_size = 4;
  int max_new_tokens = 256;
  double temperature = 1.0;
  double top_p = 1.0;
  int top_k = 0;
  std::vector<std::string> stop_strings;
  int max_batch_rows = 0;  // continuous batching: at most this many sequences at once (0 = all)
};

struct AlgoSection {
  ObjectiveOptions objective;
  int top_k = 20;
  int sdpo_top_k = 100;
  int off_policy_minibatches = 1;
};

struct TeacherSection {
  std::string weights = "auto";  // auto | current | ema | initial | model | remote
  double ema_rate = 0.05;
  std::string model_path;
  std::vector<std::string> remote_urls;  // teacher.remote_url: one URL or a list of replicas
  std::string remote_api = "distil";     // distil | openai
  std::string remote_model;              // openai: "" = the first model the server lists
  double remote_timeout_s = 60.0;
  int remote_concurrency = 8;
  std::string context = "auto";  // auto | feedback | reference
  std::string reprompt_template;
  std::string solution_template;
  std::string feedback_template;
  std::string reference_template;
  bool strip_reasoning = true;
  std::string uninformative_feedback = "mask";  // mask | use
  std::string passed_without_sibling = "mask";  // mask | own_response
};

struct OptimSection {
  double lr = 1e-5;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  int warmup_steps = 0;
  std::string schedule = "constant";  // constant | cosine
  double min_lr_ratio = 0.0;
  double grad_clip = 1.0;  // 0 = off
  int grad_accumulation = 1;
  int micro_batch_tokens = 8192;
  int chunk_tokens = 1024;
};

struct TrainSection {
  int steps = 100;
  uint64_t seed = 0;
  std::string output_dir = "runs/distil";
  int log_every = 1;
  bool progress = true;
  bool tensorboard = true;  // event files beside metrics.jsonl
  int max_failed_steps = 5;
};

struct EvalSection {
  int every = 0;
  int samples = 4;
  double temperature = 0.6;
  double top_p = 1.0;
  int max_new_tokens = 256;
  std::vector<int> k = {1, 4};
  int max_prompts = 0;
  int batch_prompts = 16;
  double max_failed_feedback = 0.05;
};

struct CheckpointSection {
  int every = 50;
  int keep_last = 3;
  std::string save_dtype = "float32";
};

struct DistributedSection {
  int zero_stage = 0;                  // 0 | 1 | 2
  double memory_per_rank_gb = 0.0;     // 0 = the device's
  std::string memory_check = "refuse";  // refuse | warn | off
};

struct TrainConfig {
  ModelSection model;
  DataSection data;
  EnvSection env;
  RolloutSection rollout;
  AlgoSection algo;
  TeacherSection teacher;
  OptimSection optim;
  TrainSection train;
  EvalSection eval;
  CheckpointSection checkpoint;
  DistributedSection distributed;
  std::string yaml;  // the full merged configuration, as printed and saved

  // The teacher weights after resolving "auto" for the objective (sdpo: ema, opsd: initial,
  // otherwise current) and the context ("auto": reference for opsd, feedback otherwise).
  std::string resolved_teacher_weights() const;
  std::string resolved_teacher_context() const;
};

// configs/default.yaml, embedded at build time: the defaults every configuration starts from.
extern const char* const kDefaultConfigYaml;

// One row of the key table, for documentation and for the test that the table and
// configs/default.yaml agree.
struct ConfigKey {
  std::string name;          // "section.key"
  std::string type;          // what a value may be, in words ("integer", "one of a | b", ...)
  std::string default_yaml;  // the default as configs/default.yaml writes it
  std::string doc;           // the comment beside it there ("" = none)
};
// Every key, in the order of configs/default.yaml.
std::vector<ConfigKey> config_keys();
// configs/default.yaml as the table writes it: the header, each section, each key with its
// default and its doc as a comment.
std::string documented_default_config();

// Merges the defaults, then each YAML file, then each "key.sub=value" override (value parsed as
// YAML, so lists are "[a, b]"), validates, and converts. Throws ConfigError naming the key.
TrainConfig load_config(const std::vector<std::string>& files,
                        const std::vector<std::string>& overrides);
// Same, from YAML text instead of files (used by tests and for saved configs).
TrainConfig load_config_text(const std::string& yaml_text,
                             const std::vector<std::string>& overrides = {});

}  // namespace distil::trainer
