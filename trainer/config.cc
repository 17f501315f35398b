// The configuration keys: one table (name, type, default, doc, how a value is read and checked)
// drives parsing, validation, the printed configuration and the documented default file. The
// defaults themselves are configs/default.yaml, embedded at build time (kDefaultConfigYaml); a
// test checks that the file is what the table writes.
#include "trainer/config.h"

#include <functional>
#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "env_server/client/url.h"

namespace distil::trainer {

namespace {

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

bool is_free_form(const std::string& key);  // a mapping key of the table (below)

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


// --- reading one value (each names `key` in its errors) -----------------------------------------

template <typename T>
T scalar(const YAML::Node& node, const std::string& key, const char* what) {
  if (!node.IsScalar()) throw ConfigError(key, std::string("expected ") + what);
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(key, std::string("expected ") + what + ", got '" + node.Scalar() + "'");
  }
}

std::string text(const YAML::Node& node, const std::string& key) {
  if (node.IsNull()) return "";
  if (!node.IsScalar()) throw ConfigError(key, "expected a string");
  return node.Scalar();
}

std::string joined(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

std::string choice(const YAML::Node& node, const std::string& key, const std::vector<std::string>& allowed) {
  std::string value = text(node, key);
  for (const auto& a : allowed) {
    if (a == value) return value;
  }
  throw ConfigError(key, "'" + value + "' is not one of " + joined(allowed, ", "));
}

template <typename T>
std::vector<T> list(const YAML::Node& node, const std::string& key, const std::string& what) {
  if (node.IsNull()) return {};
  if (!node.IsSequence()) throw ConfigError(key, "expected a list of " + what);
  std::vector<T> out;
  for (std::size_t i = 0; i < node.size(); ++i) {
    try {
      out.push_back(node[i].as<T>());
    } catch (const YAML::Exception&) {
      throw ConfigError(key + "[" + std::to_string(i) + "]", "expected " + what);
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

// --- the table ----------------------------------------------------------------------------------

struct Key {
  std::string name;          // "section.key"
  std::string type;          // what a value may be, in words
  std::string default_yaml;  // the default as configs/default.yaml writes it
  std::string doc;           // the comment beside it there ("" = none)
  std::function<void(const YAML::Node& value, TrainConfig& config)> read;  // parse, check, store
  bool mapping = false;      // a free-form mapping, checked elsewhere (env.options: by the server)
};

template <typename T>
using Field = std::function<T&(TrainConfig&)>;
#define FIELD(member) [](TrainConfig& c) -> auto& { return c.member; }

// A condition on a value and, when it fails, the problem ("must be >= 1").
template <typename T>
struct Check {
  std::function<bool(const T&)> ok;
  std::string problem;
};

std::string number_text(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}
Check<double> any_number() { return {nullptr, ""}; }
Check<double> at_least(double lo) { return {[lo](const double& v) { return v >= lo; }, "must be >= " + number_text(lo)}; }
Check<double> above(double lo) { return {[lo](const double& v) { return v > lo; }, "must be > " + number_text(lo)}; }
// brackets: "[]", "[)", "(]" or "()", as the interval is written.
Check<double> within(double lo, double hi, const char* brackets) {
  const bool lo_closed = brackets[0] == '[', hi_closed = brackets[1] == ']';
  return {[=](const double& v) { return (lo_closed ? v >= lo : v > lo) && (hi_closed ? v <= hi : v < hi); },
          std::string("must be in ") + brackets[0] + number_text(lo) + ", " + number_text(hi) + brackets[1]};
}
Check<std::string> any_text() { return {nullptr, ""}; }
Check<std::string> containing(const std::string& placeholder) {
  return {[placeholder](const std::string& v) { return v.find(placeholder) != std::string::npos; },
          "must contain " + placeholder};
}

Key text_key(std::string name, std::string def, Field<std::string> field, std::string doc,
             Check<std::string> check = any_text()) {
  const std::string key = name;
  return {std::move(name), "string", std::move(def), std::move(doc), [=](const YAML::Node& node, TrainConfig& c) {
            auto value = text(node, key);
            require(!check.ok || check.ok(value), key, check.problem);
            field(c) = std::move(value);
          }};
}

Key choice_key(std::string name, std::string def, Field<std::string> field, std::vector<std::string> allowed,
               std::string doc) {
  const std::string key = name;
  return {std::move(name), "one of " + joined(allowed, " | "), std::move(def), std::move(doc),
          [=](const YAML::Node& node, TrainConfig& c) { field(c) = choice(node, key, allowed); }};
}

template <typename E>
Key enum_key(std::string name, std::string def, Field<E> field, std::vector<std::pair<std::string, E>> values,
             std::string doc) {
  std::vector<std::string> allowed;
  for (const auto& [spelling, value] : values) allowed.push_back(spelling);
  const std::string key = name;
  return {std::move(name), "one of " + joined(allowed, " | "), std::move(def), std::move(doc),
          [=](const YAML::Node& node, TrainConfig& c) {
            const std::string spelling = choice(node, key, allowed);
            for (const auto& [s, value] : values) {
              if (s == spelling) field(c) = value;
            }
          }};
}

Key number_key(std::string name, std::string def, Field<double> field, Check<double> check, std::string doc) {
  const std::string key = name;
  return {std::move(name), "number", std::move(def), std::move(doc), [=](const YAML::Node& node, TrainConfig& c) {
            const double value = scalar<double>(node, key, "a number");
            require(!check.ok || check.ok(value), key, check.problem);
            field(c) = value;
          }};
}

Key integer_key(std::string name, std::string def, Field<int> field, Check<double> check, std::string doc) {
  const std::string key = name;
  return {std::move(name), "integer", std::move(def), std::move(doc), [=](const YAML::Node& node, TrainConfig& c) {
            const int value = scalar<int>(node, key, "an integer");
            require(!check.ok || check.ok(value), key, check.problem);
            field(c) = value;
          }};
}

Key seed_key(std::string name, std::string def, Field<uint64_t> field, std::string doc) {
  const std::string key = name;
  return {std::move(name), "non-negative integer", std::move(def), std::move(doc),
          [=](const YAML::Node& node, TrainConfig& c) { field(c) = scalar<uint64_t>(node, key, "a non-negative integer"); }};
}

Key flag_key(std::string name, std::string def, Field<bool> field, std::string doc) {
  const std::string key = name;
  return {std::move(name), "true | false", std::move(def), std::move(doc),
          [=](const YAML::Node& node, TrainConfig& c) { field(c) = scalar<bool>(node, key, "true or false"); }};
}

// A list whose items are checked one by one, each error naming "key[i]".
template <typename T>
Key list_key(std::string name, std::string def, Field<std::vector<T>> field, std::string what, std::string doc,
             std::function<void(const T&, const std::string& item_key)> check_item = nullptr) {
  const std::string key = name;
  return {std::move(name), "list of " + what, std::move(def), std::move(doc),
          [=](const YAML::Node& node, TrainConfig& c) {
            auto items = list<T>(node, key, what);
            if (check_item) {
              for (std::size_t i = 0; i < items.size(); ++i) check_item(items[i], key + "[" + std::to_string(i) + "]");
            }
            field(c) = std::move(items);
          }};
}

Key mapping_key(std::string name, std::string def, Field<nlohmann::json> field, std::string doc) {
  const std::string key = name;
  Key k{std::move(name), "mapping", std::move(def), std::move(doc), [=](const YAML::Node& node, TrainConfig& c) {
          require(node.IsMap() || node.IsNull(), key, "expected a mapping");
          field(c) = node.IsNull() ? nlohmann::json::object() : yaml_to_json(node);
        }};
  k.mapping = true;
  return k;
}

// teacher.remote_url: one URL, or a list of replicas.
Key urls_key(std::string name, std::string def, Field<std::vector<std::string>> field, std::string doc) {
  const std::string key = name;
  return {std::move(name), "URL or list of URLs", std::move(def), std::move(doc),
          [=](const YAML::Node& node, TrainConfig& c) {
            auto urls = node.IsSequence() ? list<std::string>(node, key, "URLs") : std::vector<std::string>{text(node, key)};
            if (urls.size() == 1 && urls[0].empty()) urls.clear();
            for (std::size_t i = 0; i < urls.size(); ++i)
              checked_url(urls[i], node.IsSequence() ? key + "[" + std::to_string(i) + "]" : key, true);
            field(c) = std::move(urls);
          }};
}

const std::vector<std::string> kDtypes = {"float32", "bfloat16", "float16"};

// In the order of configs/default.yaml.
const std::vector<Key>& keys() {
  static const std::vector<Key> table = {
      // model
      text_key("model.path", "\"\"", FIELD(model.path), "Hugging Face model directory (config.json, safetensors, tokenizer.json)"),
      choice_key("model.dtype", "float32", FIELD(model.dtype), kDtypes, "parameter (master weight) dtype: float32 | bfloat16 | float16"),
      choice_key("model.compute_dtype", "\"\"", FIELD(model.compute_dtype), {"", "float32", "bfloat16", "float16"},
                 "\"\" = dtype; bfloat16 runs matmuls in bf16 (mixed precision, GPU)"),
      text_key("model.device", "auto", FIELD(model.device), "auto (cuda when available) | cpu | cuda | cuda:N",
               {[](const std::string& d) { return d == "auto" || d == "cpu" || d.rfind("cuda", 0) == 0; },
                "expected auto, cpu, cuda or cuda:N"}),
      flag_key("model.gradient_checkpointing", "false", FIELD(model.gradient_checkpointing), ""),
      // "olmo" is the older name of olmo2, still accepted.
      choice_key("model.chat_format", "auto", FIELD(model.chat_format), {"auto", "chatml", "llama3", "olmo2", "olmo", "plain"},
                 "auto (the model's own chat template) | chatml | llama3 | olmo2 (OLMo 2 Instruct's; also \"olmo\") | plain"),
      flag_key("model.enable_thinking", "true", FIELD(model.enable_thinking), "chatml (Qwen3): false appends an empty <think></think> block"),
      text_key("model.system_prompt", "\"\"", FIELD(model.system_prompt), "optional system message before every prompt"),
      // data
      list_key<std::string>("data.train_tasks", "[]", FIELD(data.train_tasks), "file paths", "task JSONL files (DESIGN.md \"Task record\")"),
      list_key<std::string>("data.eval_tasks", "[]", FIELD(data.eval_tasks), "file paths", "held-out task JSONL files for periodic evaluation"),
      list_key<std::string>("data.domains", "[]", FIELD(data.domains), "domain names", "keep only these domains; [] = all"),
      seed_key("data.shuffle_seed", "0", FIELD(data.shuffle_seed), "task order: reshuffled every epoch from this seed"),
      // env
      list_key<std::string>("env.endpoints", "[]", FIELD(env.endpoints), "URLs", "distil-env base URLs, e.g. [http://127.0.0.1:8080]",
                            [](const std::string& url, const std::string& key) { checked_url(url, key, false); }),
      choice_key("env.policy", "round_robin", FIELD(env.policy), {"round_robin", "least_loaded"}, "round_robin | least_loaded"),
      number_key("env.request_timeout_s", "120", FIELD(env.request_timeout_s), above(0), ""),
      integer_key("env.max_attempts", "6", FIELD(env.max_attempts), at_least(1),
                  "per batch piece, across endpoints: exchanges without a usable answer (no connection, timeout, 5xx, not distil-env)"),
      number_key("env.overload_wait_s", "120", FIELD(env.overload_wait_s), at_least(0),
                 "per batch piece: total wait on 429/503 answers (Retry-After honoured) before its items are dropped"),
      text_key("env.auth_token_env", "\"\"", FIELD(env.auth_token_env), "name of an environment variable holding a bearer token"),
      flag_key("env.inline_tasks", "true", FIELD(env.inline_tasks), "send the whole task record (false: by task_id; the server must know it)"),
      mapping_key("env.options", "{}", FIELD(env.options), "grader options sent with every request (e.g. {reveal_answer: false})"),
      // rollout
      integer_key("rollout.prompts_per_step", "8", FIELD(rollout.prompts_per_step), at_least(1), "prompts per step over all processes (split across ranks)"),
      integer_key("rollout.group_size", "4", FIELD(rollout.group_size), at_least(1), "G responses per prompt"),
      integer_key("rollout.max_new_tokens", "256", FIELD(rollout.max_new_tokens), at_least(1), ""),
      number_key("rollout.temperature", "1.0", FIELD(rollout.temperature),
                 {[](const double& t) { return t > 0; }, "must be > 0 for training rollouts"}, ""),
      number_key("rollout.top_p", "1.0", FIELD(rollout.top_p), within(0, 1, "(]"), ""),
      integer_key("rollout.top_k", "0", FIELD(rollout.top_k), at_least(0), "0 = off"),
      list_key<std::string>("rollout.stop_strings", "[]", FIELD(rollout.stop_strings), "strings", ""),
      integer_key("rollout.max_batch_rows", "0", FIELD(rollout.max_batch_rows), at_least(0),
                  "sequences generated at once (continuous batching: a finished one's row takes the next); 0 = all"),
      // algo
      choice_key("algo.objective", "distil", FIELD(algo.objective.name), objective_names(), "distil | ce | grpo | sdpo | opsd | sft"),
      number_key("algo.lambda", "1.0", FIELD(algo.objective.lambda), any_number(), "distil: weight of the future-credit term (ce forces 0)"),
      number_key("algo.gamma", "1.0", FIELD(algo.objective.gamma), within(0, 1, "[]"), "distil: discount of later disagreement"),
      enum_key<BaselineMode>("algo.baseline", "group_mean", FIELD(algo.objective.baseline),
                             {{"group_mean", BaselineMode::group_mean}, {"none", BaselineMode::none}},
                             "distil: group_mean (leave-one-out mean over siblings) | none"),
      enum_key<FutureCost>("algo.future_cost", "ce", FIELD(algo.objective.future_cost),
                           {{"ce", FutureCost::ce}, {"kl", FutureCost::kl}},
                           "distil: what later positions credit earlier tokens with: ce (paper) | kl (variant: teacher entropy left out)"),
      number_key("algo.future_clip", "0", FIELD(algo.objective.future_clip), at_least(0),
                 "distil: clip each token's future advantage to [-c, c] (variant, biased); 0 = off"),
      integer_key("algo.top_k", "20", FIELD(algo.top_k), at_least(1), "teacher top-k per position (distil, ce, opsd)"),
      enum_key<TailMode>("algo.tail", "bucket", FIELD(algo.objective.tail),
                         {{"bucket", TailMode::bucket}, {"renormalize", TailMode::renormalize}},
                         "distil/ce: bucket (mass outside top-k as one token) | renormalize"),
      enum_key<Normalizer>("algo.normalizer", "active_tokens", FIELD(algo.objective.normalizer),
                           {{"active_tokens", Normalizer::active_tokens}, {"tokens", Normalizer::tokens},
                            {"sequences", Normalizer::sequences}},
                           "divide the loss by: active_tokens (response tokens of rollouts in the loss, SDPO) | tokens | sequences"),
      number_key("algo.clip_low", "0.2", FIELD(algo.objective.clip_low), within(0, 1, "[)"), "grpo: PPO ratio clip below 1"),
      number_key("algo.clip_high", "0.28", FIELD(algo.objective.clip_high), at_least(0), "grpo: PPO ratio clip above 1"),
      number_key("algo.dual_clip", "3.0", FIELD(algo.objective.dual_clip),
                 {[](const double& c) { return c == 0 || c > 1; }, "must be 0 (off) or > 1"},
                 "grpo: verl's clip_ratio_c, caps the loss of negative advantages at c*|A|; 0 = off"),
      number_key("algo.advantage_eps", "1.0e-6", FIELD(algo.objective.advantage_eps), at_least(0), "grpo: (r - mean) / (std + eps)"),
      integer_key("algo.off_policy_minibatches", "1", FIELD(algo.off_policy_minibatches), at_least(1),
                  "n > 1 = n minibatch updates per batch, each on 1/n of its groups (grpo/sdpo: importance ratios)"),
      number_key("algo.jsd_mix", "0.5", FIELD(algo.objective.jsd_mix), within(0, 1, "[]"), "sdpo alpha / opsd beta: 0 forward KL, 1 reverse KL"),
      number_key("algo.is_clip", "2.0", FIELD(algo.objective.is_clip), above(0), "sdpo: importance weight clip"),
      integer_key("algo.sdpo_top_k", "100", FIELD(algo.sdpo_top_k), at_least(1), "sdpo: student top-k (plus tail) the divergence runs over"),
      enum_key<SftSource>("algo.sft_source", "successful", FIELD(algo.objective.sft_source),
                          {{"successful", SftSource::successful}, {"reference", SftSource::reference}},
                          "sft: successful (rollouts that passed) | reference (task answer)"),
      // teacher
      choice_key("teacher.weights", "auto", FIELD(teacher.weights), {"auto", "current", "ema", "initial", "model", "remote"},
                 "auto (sdpo: ema, opsd: initial, else current) | current | ema | initial | model | remote"),
      number_key("teacher.ema_rate", "0.05", FIELD(teacher.ema_rate), within(0, 1, "(]"),
                 "ema: teacher <- (1 - rate) teacher + rate student after every update"),
      text_key("teacher.model_path", "\"\"", FIELD(teacher.model_path), "weights: model -> another local HF model directory (same tokenizer)"),
      urls_key("teacher.remote_url", "\"\"", FIELD(teacher.remote_urls),
               "weights: remote -> the teacher server's URL, or a list of replicas to fail over between (docs/trainer.md)"),
      choice_key("teacher.remote_api", "distil", FIELD(teacher.remote_api), {"distil", "openai"},
                 "distil: POST remote_url {prompt_tokens, response_tokens, top_k} | openai: vLLM/SGLang /v1/completions with prompt_logprobs"),
      text_key("teacher.remote_model", "\"\"", FIELD(teacher.remote_model), "openai: the served model's name; \"\" = the first id of GET /v1/models"),
      number_key("teacher.remote_timeout_s", "60", FIELD(teacher.remote_timeout_s), above(0), ""),
      integer_key("teacher.remote_concurrency", "8", FIELD(teacher.remote_concurrency), at_least(1), "requests in flight at once (one per rollout)"),
      choice_key("teacher.context", "auto", FIELD(teacher.context), {"auto", "feedback", "reference"},
                 "auto (opsd: reference, else feedback) | feedback | reference"),
      text_key("teacher.reprompt_template", "\"{prompt}{solution}{feedback}\\n\\nCorrectly solve the original question.\"",
               FIELD(teacher.reprompt_template), "", containing("{prompt}")),
      text_key("teacher.solution_template", "\"\\nCorrect solution:\\n\\n{response}\\n\\n\"", FIELD(teacher.solution_template), "",
               containing("{response}")),
      text_key("teacher.feedback_template",
               "\"\\nThe following is feedback from your unsuccessful earlier attempt:\\n\\n{feedback}\\n\\n\"",
               FIELD(teacher.feedback_template), "", containing("{feedback}")),
      text_key("teacher.reference_template", "\"\\nReference solution:\\n\\n{reference}\\n\\n\"", FIELD(teacher.reference_template), "",
               containing("{reference}")),
      flag_key("teacher.strip_reasoning", "true", FIELD(teacher.strip_reasoning), "remove <think>...</think> from a sibling's solution"),
      choice_key("teacher.uninformative_feedback", "mask", FIELD(teacher.uninformative_feedback), {"mask", "use"},
                 "feedback that only restates the verdict (grader's informative: false): mask | use"),
      choice_key("teacher.passed_without_sibling", "mask", FIELD(teacher.passed_without_sibling), {"mask", "own_response"},
                 "a passed rollout with no passed sibling: mask | own_response (its response as the solution)"),
      // optim
      number_key("optim.lr", "1.0e-5", FIELD(optim.lr), at_least(0), ""),
      number_key("optim.weight_decay", "0.0", FIELD(optim.weight_decay), at_least(0), ""),
      number_key("optim.beta1", "0.9", FIELD(optim.beta1), within(0, 1, "[)"), ""),
      number_key("optim.beta2", "0.999", FIELD(optim.beta2), within(0, 1, "[)"), ""),
      number_key("optim.eps", "1.0e-8", FIELD(optim.eps), above(0), ""),
      integer_key("optim.warmup_steps", "0", FIELD(optim.warmup_steps), at_least(0), "linear warm-up from 0"),
      choice_key("optim.schedule", "constant", FIELD(optim.schedule), {"constant", "cosine"},
                 "constant | cosine (to min_lr_ratio * lr at train.steps)"),
      number_key("optim.min_lr_ratio", "0.0", FIELD(optim.min_lr_ratio), within(0, 1, "[]"), ""),
      number_key("optim.grad_clip", "1.0", FIELD(optim.grad_clip), at_least(0), "global gradient norm clip; 0 = off"),
      integer_key("optim.grad_accumulation", "1", FIELD(optim.grad_accumulation), at_least(1),
                  "rollout batches whose gradients are summed per optimiser step"),
      integer_key("optim.micro_batch_tokens", "8192", FIELD(optim.micro_batch_tokens), at_least(1),
                  "student pass: whole prompt groups per micro-batch up to this many tokens"),
      integer_key("optim.chunk_tokens", "1024", FIELD(optim.chunk_tokens), at_least(1),
                  "positions per lm_head chunk ([B,T,V] is never materialised)"),
      // train
      integer_key("train.steps", "100", FIELD(train.steps), at_least(0), "optimiser steps"),
      seed_key("train.seed", "0", FIELD(train.seed), ""),
      text_key("train.output_dir", "runs/distil", FIELD(train.output_dir), "metrics.jsonl, config.yaml, checkpoints, eval results",
               {[](const std::string& d) { return !d.empty(); }, "must not be empty"}),
      integer_key("train.log_every", "1", FIELD(train.log_every), at_least(1), ""),
      flag_key("train.progress", "true", FIELD(train.progress), "progress bar on a terminal (plain lines otherwise)"),
      flag_key("train.tensorboard", "true", FIELD(train.tensorboard),
               "TensorBoard event files (scalars of metrics.jsonl) in output_dir: tensorboard --logdir <runs>"),
      integer_key("train.max_failed_steps", "5", FIELD(train.max_failed_steps), at_least(1),
                  "a step whose every rollout lost its feedback is retried (not counted, no update); stop after this many in a row"),
      // eval
      integer_key("eval.every", "0", FIELD(eval.every), at_least(0), "evaluate every N steps (and at the end); 0 = never during training"),
      integer_key("eval.samples", "4", FIELD(eval.samples), at_least(1), "n samples per prompt"),
      number_key("eval.temperature", "0.6", FIELD(eval.temperature), at_least(0), ""),
      number_key("eval.top_p", "1.0", FIELD(eval.top_p), within(0, 1, "(]"), ""),
      integer_key("eval.max_new_tokens", "256", FIELD(eval.max_new_tokens), at_least(1), ""),
      list_key<int>("eval.k", "[1, 4]", FIELD(eval.k), "integers", "pass@k, maj@k for each k <= samples",
                    [](const int& k, const std::string& key) { require(k >= 1, key, "must be >= 1"); }),
      integer_key("eval.max_prompts", "0", FIELD(eval.max_prompts), at_least(0), "0 = all eval tasks"),
      integer_key("eval.batch_prompts", "16", FIELD(eval.batch_prompts), at_least(1), "prompts generated together"),
      number_key("eval.max_failed_feedback", "0.05", FIELD(eval.max_failed_feedback), within(0, 1, "[]"),
                 "fraction of samples whose feedback may fail; above it the evaluation fails (distil-eval exits 1)"),
      // checkpoint
      integer_key("checkpoint.every", "50", FIELD(checkpoint.every), at_least(0), "save every N steps (and at the end); 0 = only at the end"),
      integer_key("checkpoint.keep_last", "3", FIELD(checkpoint.keep_last), at_least(1), "older checkpoint-* directories are deleted"),
      choice_key("checkpoint.save_dtype", "float32", FIELD(checkpoint.save_dtype), kDtypes, ""),
      // distributed: data parallel over the processes torchrun / Slurm start (RANK, WORLD_SIZE, LOCAL_RANK, ...)
      integer_key("distributed.zero_stage", "0", FIELD(distributed.zero_stage),
                  {[](const double& v) { return v >= 0 && v <= 2; }, "must be 0, 1 or 2 (parameter sharding, stage 3, is not built)"},
                  "0 = every rank holds full AdamW state; 1 = fp32 master weights and AdamW moments sharded over ranks; 2 = also full gradients dropped once reduced"),
      number_key("distributed.memory_per_rank_gb", "0", FIELD(distributed.memory_per_rank_gb), at_least(0),
                 "memory one rank may use, for the start-up memory plan; 0 = the device's (GPU memory, or RAM / LOCAL_WORLD_SIZE)"),
      choice_key("distributed.memory_check", "refuse", FIELD(distributed.memory_check), {"refuse", "warn", "off"},
                 "refuse | warn | off: what the start-up memory plan does when the run does not fit"),
  };
  return table;
}

#undef FIELD

bool is_free_form(const std::string& key) {
  for (const auto& k : keys()) {
    if (k.name == key) return k.mapping;
  }
  return false;
}

std::string section_of(const std::string& key) { return key.substr(0, key.find('.')); }
std::string leaf_of(const std::string& key) { return key.substr(key.find('.') + 1); }

// Checks that span several keys, after every key has been read on its own.
void check_across_keys(const TrainConfig& c) {
  const std::string weights = c.resolved_teacher_weights();
  require(weights != "model" || !c.teacher.model_path.empty(), "teacher.model_path",
          "required when teacher.weights is model");
  require(weights != "remote" || !c.teacher.remote_urls.empty(), "teacher.remote_url",
          "required when teacher.weights is remote");
  const auto objective = make_objective(c.algo.objective);
  require(!(objective->needs_teacher() && objective->teacher_scores_student_topk() && weights == "remote"),
          "teacher.weights", c.algo.objective.name + " scores the student's top-k, which a remote top-k teacher cannot provide");
  for (std::size_t i = 0; i < c.eval.k.size(); ++i) {
    require(c.eval.k[i] <= c.eval.samples, "eval.k[" + std::to_string(i) + "]",
            "must be <= eval.samples (" + std::to_string(c.eval.samples) + ")");
  }
}

TrainConfig convert(const YAML::Node& root) {
  TrainConfig c;
  YAML::Node printed(YAML::NodeType::Map);  // the merged document, key by key in table order
  for (const auto& key : keys()) {
    const YAML::Node value = node_at(root, key.name);
    key.read(value, c);
    printed[section_of(key.name)][leaf_of(key.name)] = value;
  }
  check_across_keys(c);
  YAML::Emitter emitter;
  emitter << printed;
  c.yaml = std::string(emitter.c_str()) + "\n";
  return c;
}

YAML::Node defaults() { return YAML::Load(kDefaultConfigYaml); }

TrainConfig finish(YAML::Node root, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) apply_override(root, o);
  return convert(root);
}

}  // namespace

std::vector<ConfigKey> config_keys() {
  std::vector<ConfigKey> out;
  for (const auto& k : keys()) out.push_back({k.name, k.type, k.default_yaml, k.doc});
  return out;
}

std::string documented_default_config() {
  std::string out =
      "# distil-train configuration: every setting with its default.\n"
      "# Override in your own file (only the keys you change) or with --set section.key=value.\n";
  std::string section;
  for (const auto& k : keys()) {
    if (section_of(k.name) != section) {
      section = section_of(k.name);
      out += section + ":\n";
    }
    std::string line = "  " + leaf_of(k.name) + ": " + k.default_yaml;
    // Comments start in column 30, or two spaces after a longer line.
    if (!k.doc.empty()) line += std::string(line.size() + 2 > 30 ? 2 : 30 - line.size(), ' ') + "# " + k.doc;
    out += line + "\n";
  }
  return out;
}

std::string TrainConfig::resolved_teacher_weights() const {
  if (teacher.weights != "auto") return teacher.weights;
  return make_objective(algo.objective)->default_teacher_weights();
}

std::string TrainConfig::resolved_teacher_context() const {
  if (teacher.context != "auto") return teacher.context;
  return make_objective(algo.objective)->default_teacher_context();
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
