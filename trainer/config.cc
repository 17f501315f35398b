#include "trainer/config.h"

#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "env_server/client/url.h"

namespace distil::trainer {

// Keep in sync with configs/default.yaml (a test checks they are the same document).
const char* const kDefaultConfigYaml = R"YAML(# distil-train configuration: every setting with its default.
# Override in your own file (only the keys you change) or with --set section.key=value.
model:
  path: ""                    # Hugging Face model directory (config.json, safetensors, tokenizer.json)
  dtype: float32              # parameter (master weight) dtype: float32 | bfloat16 | float16
  compute_dtype: ""           # "" = dtype; bfloat16 runs matmuls in bf16 (mixed precision, GPU)
  device: auto                # auto (cuda when available) | cpu | cuda | cuda:N
  gradient_checkpointing: false
  chat_format: auto           # auto (the model's own chat template) | chatml | llama3 | olmo | plain
  enable_thinking: true       # chatml (Qwen3): false appends an empty <think></think> block
  system_prompt: ""           # optional system message before every prompt
data:
  train_tasks: []             # task JSONL files (DESIGN.md "Task record")
  eval_tasks: []              # held-out task JSONL files for periodic evaluation
  domains: []                 # keep only these domains; [] = all
  shuffle_seed: 0             # task order: reshuffled every epoch from this seed
env:
  endpoints: []               # distil-env base URLs, e.g. [http://127.0.0.1:8080]
  policy: round_robin         # round_robin | least_loaded
  request_timeout_s: 120
  max_attempts: 6             # per batch piece, across endpoints: exchanges without a usable answer (no connection, timeout, 5xx, not distil-env)
  overload_wait_s: 120        # per batch piece: total wait on 429/503 answers (Retry-After honoured) before its items are dropped
  auth_token_env: ""          # name of an environment variable holding a bearer token
  inline_tasks: true          # send the whole task record (false: by task_id; the server must know it)
  options: {}                 # grader options sent with every request (e.g. {reveal_answer: false})
rollout:
  prompts_per_step: 8         # prompts per step over all processes (split across ranks)
  group_size: 4               # G responses per prompt
  max_new_tokens: 256
  temperature: 1.0
  top_p: 1.0
  top_k: 0                    # 0 = off
  stop_strings: []
algo:
  objective: distil           # distil | ce | grpo | sdpo | opsd | sft
  lambda: 1.0                 # distil: weight of the future-credit term (ce forces 0)
  gamma: 1.0                  # distil: discount of later disagreement
  baseline: group_mean        # distil: group_mean (leave-one-out mean over siblings) | none
  top_k: 20                   # teacher top-k per position (distil, ce, opsd)
  tail: bucket                # distil/ce: bucket (mass outside top-k as one token) | renormalize
  normalizer: active_tokens   # divide the loss by: active_tokens (response tokens of rollouts in the loss, SDPO) | tokens | sequences
  clip_low: 0.2               # grpo: PPO ratio clip below 1
  clip_high: 0.28             # grpo: PPO ratio clip above 1
  dual_clip: 3.0              # grpo: verl's clip_ratio_c, caps the loss of negative advantages at c*|A|; 0 = off
  advantage_eps: 1.0e-6       # grpo: (r - mean) / (std + eps)
  off_policy_minibatches: 1   # grpo: 1 = on-policy; n > 1 = n minibatch updates with importance ratios
  jsd_mix: 0.5                # sdpo alpha / opsd beta: 0 forward KL, 1 reverse KL
  is_clip: 2.0                # sdpo: importance weight clip
  sdpo_top_k: 100             # sdpo: student top-k (plus tail) the divergence runs over
  sft_source: successful      # sft: successful (rollouts that passed) | reference (task answer)
teacher:
  weights: auto               # auto (sdpo: ema, opsd: initial, else current) | current | ema | initial | model | remote
  ema_rate: 0.05              # ema: teacher <- (1 - rate) teacher + rate student after every update
  model_path: ""              # weights: model -> another local HF model directory (same tokenizer)
  remote_url: ""              # weights: remote -> the teacher server's URL, or a list of replicas to fail over between (docs/trainer.md)
  remote_api: distil          # distil: POST remote_url {prompt_tokens, response_tokens, top_k} | openai: vLLM/SGLang /v1/completions with prompt_logprobs
  remote_model: ""            # openai: the served model's name; "" = the first id of GET /v1/models
  remote_timeout_s: 60
  remote_concurrency: 8       # requests in flight at once (one per rollout)
  context: auto               # auto (opsd: reference, else feedback) | feedback | reference
  reprompt_template: "{prompt}{solution}{feedback}\n\nCorrectly solve the original question."
  solution_template: "\nCorrect solution:\n\n{response}\n\n"
  feedback_template: "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback}\n\n"
  reference_template: "\nReference solution:\n\n{reference}\n\n"
  strip_reasoning: true       # remove <think>...</think> from a sibling's solution
  uninformative_feedback: mask  # feedback that only restates the verdict (grader's informative: false): mask | use
  passed_without_sibling: mask  # a passed rollout with no passed sibling: mask | own_response (its response as the solution)
optim:
  lr: 1.0e-5
  weight_decay: 0.0
  beta1: 0.9
  beta2: 0.999
  eps: 1.0e-8
  warmup_steps: 0             # linear warm-up from 0
  schedule: constant          # constant | cosine (to min_lr_ratio * lr at train.steps)
  min_lr_ratio: 0.0
  grad_clip: 1.0              # global gradient norm clip; 0 = off
  grad_accumulation: 1        # rollout batches whose gradients are summed per optimiser step
  micro_batch_tokens: 8192    # student pass: whole prompt groups per micro-batch up to this many tokens
  chunk_tokens: 1024          # positions per lm_head chunk ([B,T,V] is never materialised)
train:
  steps: 100                  # optimiser steps
  seed: 0
  output_dir: runs/distil     # metrics.jsonl, config.yaml, checkpoints, eval results
  log_every: 1
  progress: true              # progress bar on a terminal (plain lines otherwise)
  tensorboard: true           # TensorBoard event files (scalars of metrics.jsonl) in output_dir: tensorboard --logdir <runs>
  max_failed_steps: 5         # a step whose every rollout lost its feedback is retried (not counted, no update); stop after this many in a row
eval:
  every: 0                    # evaluate every N steps (and at the end); 0 = never during training
  samples: 4                  # n samples per prompt
  temperature: 0.6
  top_p: 1.0
  max_new_tokens: 256
  k: [1, 4]                   # pass@k, maj@k for each k <= samples
  max_prompts: 0              # 0 = all eval tasks
  batch_prompts: 16           # prompts generated together
  max_failed_feedback: 0.05   # fraction of samples whose feedback may fail; above it the evaluation fails (distil-eval exits 1)
checkpoint:
  every: 50                   # save every N steps (and at the end); 0 = only at the end
  keep_last: 3                # older checkpoint-* directories are deleted
  save_dtype: float32
distributed:                  # data parallel over the processes torchrun / Slurm start (RANK, WORLD_SIZE, LOCAL_RANK, ...)
  zero_stage: 0               # 0 = every rank holds full AdamW state; 1 = fp32 master weights and AdamW moments sharded over ranks; 2 = also full gradients dropped once reduced
  memory_per_rank_gb: 0       # memory one rank may use, for the start-up memory plan; 0 = the device's (GPU memory, or RAM / LOCAL_WORLD_SIZE)
  memory_check: refuse        # refuse | warn | off: what the start-up memory plan does when the run does not fit
)YAML";

namespace {

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Free-form maps whose contents are validated elsewhere (grader options by the env server).
bool is_free_form(const std::string& key) { return key == "env.options"; }

void merge_into(YAML::Node base, const YAML::Node& user, const std::string& prefix) {
  if (!user.IsMap()) throw ConfigError(prefix.empty() ? "<root>" : prefix, "expected a mapping");
  for (const auto& entry : user) {
    const std::string name = entry.first.as<std::string>();
    const std::string key = join_key(prefix, name);
    YAML::Node existing = base[name];
    if (!existing.IsDefined()) {
      throw ConfigError(key, "unknown key");
    }
    if (existing.IsMap() && !is_free_form(key)) {
      merge_into(existing, entry.second, key);
    } else {
      base[name] = YAML::Clone(entry.second);
    }
  }
}

YAML::Node node_at(const YAML::Node& root, const std::string& key) {
  std::stringstream parts(key);
  std::string part;
  std::vector<YAML::Node> path{root};
  while (std::getline(parts, part, '.')) {
    YAML::Node parent = path.back();
    if (!parent.IsMap() || !parent[part]) throw ConfigError(key, "unknown key");
    path.push_back(parent[part]);
  }
  return path.back();
}

void apply_override(YAML::Node root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw ConfigError(assignment, "override must look like section.key=value");
  }
  const std::string key = assignment.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(assignment.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw ConfigError(key, std::string("cannot parse value: ") + e.what());
  }
  // Build a one-key document {a: {b: value}} and merge it, so the same validation applies.
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  YAML::Node doc = value.IsNull() ? YAML::Node(YAML::NodeType::Null) : value;
  if (assignment.substr(eq + 1).empty()) doc = YAML::Node(std::string());
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    YAML::Node wrapper(YAML::NodeType::Map);
    wrapper[*it] = doc;
    doc = wrapper;
  }
  merge_into(root, doc, "");
}

template <typename T>
T scalar(const YAML::Node& root, const std::string& key, const char* what) {
  YAML::Node node = node_at(root, key);
  if (!node.IsScalar()) throw ConfigError(key, std::string("expected ") + what);
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(key, std::string("expected ") + what + ", got '" + node.Scalar() + "'");
  }
}

double number(const YAML::Node& root, const std::string& key) {
  return scalar<double>(root, key, "a number");
}
int integer(const YAML::Node& root, const std::string& key) { return scalar<int>(root, key, "an integer"); }
bool boolean(const YAML::Node& root, const std::string& key) {
  return scalar<bool>(root, key, "true or false");
}
std::string text(const YAML::Node& root, const std::string& key) {
  YAML::Node node = node_at(root, key);
  if (node.IsNull()) return "";
  if (!node.IsScalar()) throw ConfigError(key, "expected a string");
  return node.Scalar();
}

std::string choice(const YAML::Node& root, const std::string& key,
                   const std::vector<std::string>& allowed) {
  std::string value = text(root, key);
  for (const auto& a : allowed) {
    if (a == value) return value;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  throw ConfigError(key, "'" + value + "' is not one of " + list);
}

template <typename T>
std::vector<T> list(const YAML::Node& root, const std::string& key, const char* what) {
  YAML::Node node = node_at(root, key);
  if (node.IsNull()) return {};
  if (!node.IsSequence()) throw ConfigError(key, std::string("expected a list of ") + what);
  std::vector<T> out;
  for (std::size_t i = 0; i < node.size(); ++i) {
    try {
      out.push_back(node[i].as<T>());
    } catch (const YAML::Exception&) {
      throw ConfigError(key + "[" + std::to_string(i) + "]", std::string("expected ") + what);
    }
  }
  return out;
}

nlohmann::json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    auto out = nlohmann::json::object();
    for (const auto& e : node) out[e.first.as<std::string>()] = yaml_to_json(e.second);
    return out;
  }
  if (node.IsSequence()) {
    auto out = nlohmann::json::array();
    for (const auto& e : node) out.push_back(yaml_to_json(e));
    return out;
  }
  if (node.IsNull()) return nullptr;
  const std::string& s = node.Scalar();
  if (node.Tag() != "!") {  // unquoted scalars may be numbers or booleans
    if (s == "true" || s == "false") return s == "true";
    try {
      std::size_t used = 0;
      long long i = std::stoll(s, &used);
      if (used == s.size()) return i;
      double d = std::stod(s, &used);
      if (used == s.size()) return d;
    } catch (const std::exception&) {
    }
  }
  return s;
}

void require(bool ok, const std::string& key, const std::string& problem) {
  if (!ok) throw ConfigError(key, problem);
}

// The client's own URL parser, so a URL the client would refuse is refused here, naming the key.
void checked_url(const std::string& url, const std::string& key, bool allow_path) {
  try {
    http::parse_http_url(url, key, allow_path);
  } catch (const std::invalid_argument& e) {
    std::string why = e.what();
    why = why.substr(std::min(why.size(), key.size() + 2));  // parse_http_url prefixes "key: "
    throw ConfigError(key, why);
  }
}

TrainConfig convert(const YAML::Node& root) {
  TrainConfig c;
  auto& m = c.model;
  m.path = text(root, "model.path");
  m.dtype = choice(root, "model.dtype", {"float32", "bfloat16", "float16"});
  m.compute_dtype = choice(root, "model.compute_dtype", {"", "float32", "bfloat16", "float16"});
  m.device = text(root, "model.device");
  require(m.device == "auto" || m.device == "cpu" || m.device.rfind("cuda", 0) == 0, "model.device",
          "expected auto, cpu, cuda or cuda:N");
  m.gradient_checkpointing = boolean(root, "model.gradient_checkpointing");
  m.chat_format = choice(root, "model.chat_format", {"auto", "chatml", "llama3", "olmo", "plain"});
  m.enable_thinking = boolean(root, "model.enable_thinking");
  m.system_prompt = text(root, "model.system_prompt");

  c.data.train_tasks = list<std::string>(root, "data.train_tasks", "file paths");
  c.data.eval_tasks = list<std::string>(root, "data.eval_tasks", "file paths");
  c.data.domains = list<std::string>(root, "data.domains", "domain names");
  c.data.shuffle_seed = scalar<uint64_t>(root, "data.shuffle_seed", "a non-negative integer");

  auto& e = c.env;
  e.endpoints = list<std::string>(root, "env.endpoints", "URLs");
  for (std::size_t i = 0; i < e.endpoints.size(); ++i) checked_url(e.endpoints[i], "env.endpoints[" + std::to_string(i) + "]", false);
  e.policy = choice(root, "env.policy", {"round_robin", "least_loaded"});
  e.request_timeout_s = number(root, "env.request_timeout_s");
  require(e.request_timeout_s > 0, "env.request_timeout_s", "must be > 0");
  e.max_attempts = integer(root, "env.max_attempts");
  require(e.max_attempts >= 1, "env.max_attempts", "must be >= 1");
  e.overload_wait_s = number(root, "env.overload_wait_s");
  require(e.overload_wait_s >= 0, "env.overload_wait_s", "must be >= 0");
  e.auth_token_env = text(root, "env.auth_token_env");
  e.inline_tasks = boolean(root, "env.inline_tasks");
  YAML::Node options = node_at(root, "env.options");
  require(options.IsMap() || options.IsNull(), "env.options", "expected a mapping");
  e.options = options.IsNull() ? nlohmann::json::object() : yaml_to_json(options);

  auto& r = c.rollout;
  r.prompts_per_step = integer(root, "rollout.prompts_per_step");
  require(r.prompts_per_step >= 1, "rollout.prompts_per_step", "must be >= 1");
  r.group_size = integer(root, "rollout.group_size");
  require(r.group_size >= 1, "rollout.group_size", "must be >= 1");
  r.max_new_tokens = integer(root, "rollout.max_new_tokens");
  require(r.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1");
  r.temperature = number(root, "rollout.temperature");
  require(r.temperature > 0, "rollout.temperature", "must be > 0 for training rollouts");
  r.top_p = number(root, "rollout.top_p");
  require(r.top_p > 0 && r.top_p <= 1, "rollout.top_p", "must be in (0, 1]");
  r.top_k = integer(root, "rollout.top_k");
  require(r.top_k >= 0, "rollout.top_k", "must be >= 0");
  r.stop_strings = list<std::string>(root, "rollout.stop_strings", "strings");

  auto& a = c.algo;
  auto& o = a.objective;
  o.name = choice(root, "algo.objective", objective_names());
  o.lambda = number(root, "algo.lambda");
  o.gamma = number(root, "algo.gamma");
  require(o.gamma >= 0 && o.gamma <= 1, "algo.gamma", "must be in [0, 1]");
  o.baseline = choice(root, "algo.baseline", {"group_mean", "none"}) == "none"
                   ? BaselineMode::none
                   : BaselineMode::group_mean;
  a.top_k = integer(root, "algo.top_k");
  require(a.top_k >= 1, "algo.top_k", "must be >= 1");
  o.tail = choice(root, "algo.tail", {"bucket", "renormalize"}) == "bucket" ? TailMode::bucket
                                                                            : TailMode::renormalize;
  const std::string normalizer = choice(root, "algo.normalizer", {"active_tokens", "tokens", "sequences"});
  o.normalizer = normalizer == "active_tokens" ? Normalizer::active_tokens
                 : normalizer == "tokens"      ? Normalizer::tokens
                                               : Normalizer::sequences;
  o.clip_low = number(root, "algo.clip_low");
  require(o.clip_low >= 0 && o.clip_low < 1, "algo.clip_low", "must be in [0, 1)");
  o.clip_high = number(root, "algo.clip_high");
  require(o.clip_high >= 0, "algo.clip_high", "must be >= 0");
  o.dual_clip = number(root, "algo.dual_clip");
  require(o.dual_clip == 0 || o.dual_clip > 1, "algo.dual_clip", "must be 0 (off) or > 1");
  o.advantage_eps = number(root, "algo.advantage_eps");
  require(o.advantage_eps >= 0, "algo.advantage_eps", "must be >= 0");
  a.off_policy_minibatches = integer(root, "algo.off_policy_minibatches");
  require(a.off_policy_minibatches >= 1, "algo.off_policy_minibatches", "must be >= 1");
  o.jsd_mix = number(root, "algo.jsd_mix");
  require(o.jsd_mix >= 0 && o.jsd_mix <= 1, "algo.jsd_mix", "must be in [0, 1]");
  o.is_clip = number(root, "algo.is_clip");
  require(o.is_clip > 0, "algo.is_clip", "must be > 0");
  a.sdpo_top_k = integer(root, "algo.sdpo_top_k");
  require(a.sdpo_top_k >= 1, "algo.sdpo_top_k", "must be >= 1");
  a.sft_source = choice(root, "algo.sft_source", {"successful", "reference"});

  auto& t = c.teacher;
  t.weights = choice(root, "teacher.weights", {"auto", "current", "ema", "initial", "model", "remote"});
  t.ema_rate = number(root, "teacher.ema_rate");
  require(t.ema_rate > 0 && t.ema_rate <= 1, "teacher.ema_rate", "must be in (0, 1]");
  t.model_path = text(root, "teacher.model_path");
  {
    YAML::Node urls = node_at(root, "teacher.remote_url");
    t.remote_urls = urls.IsSequence() ? list<std::string>(root, "teacher.remote_url", "URLs")
                                      : std::vector<std::string>{text(root, "teacher.remote_url")};
    if (t.remote_urls.size() == 1 && t.remote_urls[0].empty()) t.remote_urls.clear();
    for (std::size_t i = 0; i < t.remote_urls.size(); ++i)
      checked_url(t.remote_urls[i], urls.IsSequence() ? "teacher.remote_url[" + std::to_string(i) + "]" : "teacher.remote_url", true);
  }
  t.remote_api = choice(root, "teacher.remote_api", {"distil", "openai"});
  t.remote_model = text(root, "teacher.remote_model");
  t.remote_timeout_s = number(root, "teacher.remote_timeout_s");
  require(t.remote_timeout_s > 0, "teacher.remote_timeout_s", "must be > 0");
  t.remote_concurrency = integer(root, "teacher.remote_concurrency");
  require(t.remote_concurrency >= 1, "teacher.remote_concurrency", "must be >= 1");
  t.context = choice(root, "teacher.context", {"auto", "feedback", "reference"});
  t.reprompt_template = text(root, "teacher.reprompt_template");
  require(t.reprompt_template.find("{prompt}") != std::string::npos, "teacher.reprompt_template",
          "must contain {prompt}");
  t.solution_template = text(root, "teacher.solution_template");
  require(t.solution_template.find("{response}") != std::string::npos, "teacher.solution_template",
          "must contain {response}");
  t.feedback_template = text(root, "teacher.feedback_template");
  require(t.feedback_template.find("{feedback}") != std::string::npos, "teacher.feedback_template",
          "must contain {feedback}");
  t.reference_template = text(root, "teacher.reference_template");
  require(t.reference_template.find("{reference}") != std::string::npos,
          "teacher.reference_template", "must contain {reference}");
  t.strip_reasoning = boolean(root, "teacher.strip_reasoning");
  t.uninformative_feedback = choice(root, "teacher.uninformative_feedback", {"mask", "use"});
  t.passed_without_sibling = choice(root, "teacher.passed_without_sibling", {"mask", "own_response"});

  auto& op = c.optim;
  op.lr = number(root, "optim.lr");
  require(op.lr >= 0, "optim.lr", "must be >= 0");
  op.weight_decay = number(root, "optim.weight_decay");
  require(op.weight_decay >= 0, "optim.weight_decay", "must be >= 0");
  op.beta1 = number(root, "optim.beta1");
  require(op.beta1 >= 0 && op.beta1 < 1, "optim.beta1", "must be in [0, 1)");
  op.beta2 = number(root, "optim.beta2");
  require(op.beta2 >= 0 && op.beta2 < 1, "optim.beta2", "must be in [0, 1)");
  op.eps = number(root, "optim.eps");
  require(op.eps > 0, "optim.eps", "must be > 0");
  op.warmup_steps = integer(root, "optim.warmup_steps");
  require(op.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0");
  op.schedule = choice(root, "optim.schedule", {"constant", "cosine"});
  op.min_lr_ratio = number(root, "optim.min_lr_ratio");
  require(op.min_lr_ratio >= 0 && op.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]");
  op.grad_clip = number(root, "optim.grad_clip");
  require(op.grad_clip >= 0, "optim.grad_clip", "must be >= 0");
  op.grad_accumulation = integer(root, "optim.grad_accumulation");
  require(op.grad_accumulation >= 1, "optim.grad_accumulation", "must be >= 1");
  op.micro_batch_tokens = integer(root, "optim.micro_batch_tokens");
  require(op.micro_batch_tokens >= 1, "optim.micro_batch_tokens", "must be >= 1");
  op.chunk_tokens = integer(root, "optim.chunk_tokens");
  require(op.chunk_tokens >= 1, "optim.chunk_tokens", "must be >= 1");

  auto& tr = c.train;
  tr.steps = integer(root, "train.steps");
  require(tr.steps >= 0, "train.steps", "must be >= 0");
  tr.seed = scalar<uint64_t>(root, "train.seed", "a non-negative integer");
  tr.output_dir = text(root, "train.output_dir");
  require(!tr.output_dir.empty(), "train.output_dir", "must not be empty");
  tr.log_every = integer(root, "train.log_every");
  require(tr.log_every >= 1, "train.log_every", "must be >= 1");
  tr.max_failed_steps = integer(root, "train.max_failed_steps");
  require(tr.max_failed_steps >= 1, "train.max_failed_steps", "must be >= 1");
  tr.progress = boolean(root, "train.progress");
  tr.tensorboard = boolean(root, "train.tensorboard");

  auto& ev = c.eval;
  ev.every = integer(root, "eval.every");
  require(ev.every >= 0, "eval.every", "must be >= 0");
  ev.samples = integer(root, "eval.samples");
  require(ev.samples >= 1, "eval.samples", "must be >= 1");
  ev.temperature = number(root, "eval.temperature");
  require(ev.temperature >= 0, "eval.temperature", "must be >= 0");
  ev.top_p = number(root, "eval.top_p");
  require(ev.top_p > 0 && ev.top_p <= 1, "eval.top_p", "must be in (0, 1]");
  ev.max_new_tokens = integer(root, "eval.max_new_tokens");
  require(ev.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1");
  ev.k = list<int>(root, "eval.k", "integers");
  for (std::size_t i = 0; i < ev.k.size(); ++i) {
    require(ev.k[i] >= 1, "eval.k[" + std::to_string(i) + "]", "must be >= 1");
  }
  ev.max_prompts = integer(root, "eval.max_prompts");
  require(ev.max_prompts >= 0, "eval.max_prompts", "must be >= 0");
  ev.max_failed_feedback = number(root, "eval.max_failed_feedback");
  require(ev.max_failed_feedback >= 0 && ev.max_failed_feedback <= 1, "eval.max_failed_feedback", "must be in [0, 1]");
  ev.batch_prompts = integer(root, "eval.batch_prompts");
  require(ev.batch_prompts >= 1, "eval.batch_prompts", "must be >= 1");

  c.checkpoint.every = integer(root, "checkpoint.every");
  require(c.checkpoint.every >= 0, "checkpoint.every", "must be >= 0");
  c.checkpoint.keep_last = integer(root, "checkpoint.keep_last");
  require(c.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1");
  c.checkpoint.save_dtype = choice(root, "checkpoint.save_dtype", {"float32", "bfloat16", "float16"});

  c.distributed.zero_stage = integer(root, "distributed.zero_stage");
  require(c.distributed.zero_stage >= 0 && c.distributed.zero_stage <= 2, "distributed.zero_stage",
          "must be 0, 1 or 2 (parameter sharding, stage 3, is not built)");
  c.distributed.memory_per_rank_gb = number(root, "distributed.memory_per_rank_gb");
  require(c.distributed.memory_per_rank_gb >= 0, "distributed.memory_per_rank_gb", "must be >= 0 (0 = the device's)");
  c.distributed.memory_check = choice(root, "distributed.memory_check", {"refuse", "warn", "off"});

  // Cross-field checks.
  const std::string weights = c.resolved_teacher_weights();
  require(weights != "model" || !t.model_path.empty(), "teacher.model_path",
          "required when teacher.weights is model");
  require(weights != "remote" || !t.remote_urls.empty(), "teacher.remote_url",
          "required when teacher.weights is remote");
  require(!(o.name == "sdpo" && weights == "remote"), "teacher.weights",
          "sdpo scores the student's top-k, which a remote top-k teacher cannot provide");
  for (std::size_t i = 0; i < ev.k.size(); ++i) {
    require(ev.k[i] <= ev.samples, "eval.k[" + std::to_string(i) + "]",
            "must be <= eval.samples (" + std::to_string(ev.samples) + ")");
  }
  YAML::Emitter emitter;
  emitter << root;
  c.yaml = std::string(emitter.c_str()) + "\n";
  return c;
}

YAML::Node defaults() { return YAML::Load(kDefaultConfigYaml); }

TrainConfig finish(YAML::Node root, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) apply_override(root, o);
  return convert(root);
}

}  // namespace

std::string TrainConfig::resolved_teacher_weights() const {
  if (teacher.weights != "auto") return teacher.weights;
  if (algo.objective.name == "sdpo") return "ema";
  if (algo.objective.name == "opsd") return "initial";
  return "current";
}

std::string TrainConfig::resolved_teacher_context() const {
  if (teacher.context != "auto") return teacher.context;
  return algo.objective.name == "opsd" ? "reference" : "feedback";
}

TrainConfig load_config(const std::vector<std::string>& files,
                        const std::vector<std::string>& overrides) {
  YAML::Node root = defaults();
  for (const auto& file : files) {
    std::ifstream in(file);
    if (!in) throw ConfigError(file, "cannot open config file");
    YAML::Node user;
    try {
      user = YAML::Load(in);
    } catch (const YAML::Exception& e) {
      throw ConfigError(file, std::string("invalid YAML: ") + e.what());
    }
    if (!user.IsNull()) merge_into(root, user, "");
  }
  return finish(root, overrides);
}

TrainConfig load_config_text(const std::string& yaml_text, const std::vector<std::string>& overrides) {
  YAML::Node root = defaults();
  YAML::Node user;
  try {
    user = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("<config>", std::string("invalid YAML: ") + e.what());
  }
  if (!user.IsNull()) merge_into(root, user, "");
  return finish(root, overrides);
}

}  // namespace distil::trainer
