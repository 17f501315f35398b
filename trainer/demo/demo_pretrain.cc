#include "trainer/demo/demo_pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "graders/grader.h"
#include "trainer/model/generate.h"
#include "trainer/reproducible.h"
#include "trainer/rollout.h"
#include "trainer/teacher.h"
#include "trainer/text/chat.h"

namespace distil::trainer::demo {
namespace {

// Bump when the corpus or training code changes in a way the recipe fields do not capture, so a
// stale cached model is not reused.
// 2: length-bucketed batches, feedback_correct examples; 3: feedback_correct examples in the
// own_response context (no longer "feedback on your unsuccessful attempt: Correct."),
// deterministic kernels (pinned CPU kernels, see pin_deterministic_kernels); 4: the code grader's
// feedback (in the code corpus) comes from the LiveCodeBench-style runner, whose tracebacks name
// solution.py and show only the program's own frames.
constexpr int kCorpusVersion = 4;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
  return h;
}

void require(bool ok, const std::string& field, const std::string& problem) {
  if (!ok) throw std::invalid_argument(field + ": " + problem);
}

text::ChatFormat chat_format_for(const PromptFormats& formats, const text::Tokenizer& tokenizer) {
  return text::ChatFormat::for_model(tokenizer, formats.model.chat_format);
}

struct TokenizedExample {
  std::vector<int32_t> prompt;
  std::vector<int32_t> response;
};

TokenizedExample tokenize(const CorpusExample& example, const text::Tokenizer& tokenizer,
                          const PromptRenderer& renderer, const text::ChatFormat& format) {
  TokenizedExample t;
  t.prompt = renderer.encode(example.user_message);
  // The response as generation produces it: the text, then the end-of-turn token that stops it.
  t.response = tokenizer.encode(example.response + std::string(format.end_of_turn()), true);
  return t;
}

// Mean cross-entropy of the response tokens of a left-padded batch (differentiable).
torch::Tensor response_loss(model::CausalLM& model, const std::vector<TokenizedExample>& batch, int32_t pad_id) {
  std::vector<std::vector<int32_t>> prompts, responses;
  for (const auto& e : batch) prompts.push_back(e.prompt), responses.push_back(e.response);
  const model::PackedBatch packed = model::pack_sequences(prompts, responses, pad_id);
  const int64_t B = packed.input_ids.size(0), T = packed.input_ids.size(1);
  std::vector<int64_t> targets(B * T, -100);
  auto ids = packed.input_ids.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < packed.response_length[b]; ++t) {
      const int64_t col = packed.response_start[b] + t;
      targets[b * T + col - 1] = ids[b][col];
    }
  const torch::Tensor logits = model->forward(packed.input_ids, packed.attention_mask);
  return torch::nn::functional::cross_entropy(
      logits.reshape({B * T, -1}), torch::tensor(targets, torch::kLong),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
}

int sample_wrong_excluding(const Problem& p, int excluded, std::mt19937_64& rng) {
  for (;;) {
    const int v = plausible_wrong_answer(p, rng);
    if (v != excluded) return v;
  }
}

double uniform01(std::mt19937_64& rng) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }

}  // namespace

void PretrainRecipe::validate() const {
  require(domain == "arithmetic" || domain == "code", "domain", "must be arithmetic or code, got '" + domain + "'");
  require(split.heldout_fraction > 0 && split.heldout_fraction < 1, "split.heldout_fraction", "must be in (0, 1)");
  require(variants_per_rule >= 1 && variants_per_rule <= 10000, "variants_per_rule", "must be in [1, 10000]");
  for (auto [name, v] : {std::pair{"code_factor_correct", code_factor_correct}, {"code_bug_rate", code_bug_rate},
                         {"code_after_feedback_correct", code_after_feedback_correct},
                         {"code_misconception", code_misconception}})
    require(v >= 0 && v <= 1, name, "must be a probability in [0, 1]");
  for (auto [name, v] : {std::pair{"add_correct", add_correct}, {"subtract_correct", subtract_correct},
                         {"after_feedback_correct", after_feedback_correct}})
    require(v >= 0 && v <= 1, name, "must be a probability in [0, 1]");
  for (auto [name, v] : {std::pair{"mix_student", mix_student}, {"mix_solution", mix_solution},
                         {"mix_reference", mix_reference}, {"mix_feedback", mix_feedback},
          {"mix_feedback_correct", mix_feedback_correct},
                         {"mix_feedback_correct", mix_feedback_correct}})
    require(v >= 0 && std::isfinite(v), name, "must be a non-negative weight");
  require(mix_student + mix_solution + mix_reference + mix_feedback + mix_feedback_correct > 0, "mix_*",
          "weights must not all be 0");
  require(bpe_merges >= 0 && bpe_merges <= 4096, "bpe_merges", "must be in [0, 4096]");
  require(hidden_size > 0 && num_layers > 0 && num_heads > 0 && num_kv_heads > 0 && intermediate_size > 0,
          "model", "sizes must be positive");
  require(hidden_size % num_heads == 0, "hidden_size", "must be divisible by num_heads");
  require(num_heads % num_kv_heads == 0, "num_kv_heads", "must divide num_heads");
  require((hidden_size / num_heads) % 2 == 0, "hidden_size", "head dimension must be even (RoPE)");
  require(steps >= 0, "steps", "must be >= 0");
  require(batch_size > 0, "batch_size", "must be positive");
  require(lr > 0 && min_lr >= 0 && min_lr <= lr, "lr", "need 0 <= min_lr <= lr and lr > 0");
  require(warmup_steps >= 0, "warmup_steps", "must be >= 0");
  require(weight_decay >= 0, "weight_decay", "must be >= 0");
}

nlohmann::json PretrainRecipe::to_json() const {
  return {{"domain", domain},
          {"variants_per_rule", variants_per_rule},
          {"code_factor_correct", code_factor_correct},
          {"code_bug_rate", code_bug_rate},
          {"code_after_feedback_correct", code_after_feedback_correct},
          {"code_misconception", code_misconception},
          {"split_seed", split.seed},       {"heldout_fraction", split.heldout_fraction},
          {"add_correct", add_correct},     {"subtract_correct", subtract_correct},
          {"after_feedback_correct", after_feedback_correct},
          {"mix_student", mix_student},     {"mix_solution", mix_solution},
          {"mix_reference", mix_reference}, {"mix_feedback", mix_feedback},
          {"mix_feedback_correct", mix_feedback_correct},
          {"bpe_merges", bpe_merges},       {"hidden_size", hidden_size},
          {"num_layers", num_layers},       {"num_heads", num_heads},
          {"num_kv_heads", num_kv_heads},   {"intermediate_size", intermediate_size},
          {"steps", steps},                 {"batch_size", batch_size},
          {"lr", lr},                       {"min_lr", min_lr},
          {"warmup_steps", warmup_steps},   {"weight_decay", weight_decay},
          {"seed", seed}};
}

PretrainRecipe PretrainRecipe::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw std::invalid_argument("recipe: expected a JSON object");
  PretrainRecipe r;
  const nlohmann::json known = r.to_json();
  for (const auto& [key, value] : j.items()) {
    if (!known.contains(key)) throw std::invalid_argument(key + ": unknown recipe key");
    if (key == "domain") {
      if (!value.is_string()) throw std::invalid_argument("domain: expected arithmetic or code");
      continue;
    }
    if (!value.is_number()) throw std::invalid_argument(key + ": expected a number");
    const bool integral = known[key].is_number_integer() || known[key].is_number_unsigned();
    if (integral && !(value.is_number_integer() || value.is_number_unsigned()))
      throw std::invalid_argument(key + ": expected an integer");
    if (integral && key != "seed" && key != "split_seed" && value.get<double>() < 0)
      throw std::invalid_argument(key + ": must be >= 0");
  }
  auto num = [&](const char* key, auto& field) {
    if (j.contains(key)) field = j[key].get<std::decay_t<decltype(field)>>();
  };
  if (j.contains("domain")) r.domain = j["domain"].get<std::string>();
  num("variants_per_rule", r.variants_per_rule);
  num("code_factor_correct", r.code_factor_correct);
  num("code_bug_rate", r.code_bug_rate);
  num("code_after_feedback_correct", r.code_after_feedback_correct);
  num("code_misconception", r.code_misconception);
  num("split_seed", r.split.seed);
  num("heldout_fraction", r.split.heldout_fraction);
  num("add_correct", r.add_correct);
  num("subtract_correct", r.subtract_correct);
  num("after_feedback_correct", r.after_feedback_correct);
  num("mix_student", r.mix_student);
  num("mix_solution", r.mix_solution);
  num("mix_reference", r.mix_reference);
  num("mix_feedback", r.mix_feedback);
  num("mix_feedback_correct", r.mix_feedback_correct);
  num("bpe_merges", r.bpe_merges);
  num("hidden_size", r.hidden_size);
  num("num_layers", r.num_layers);
  num("num_heads", r.num_heads);
  num("num_kv_heads", r.num_kv_heads);
  num("intermediate_size", r.intermediate_size);
  num("steps", r.steps);
  num("batch_size", r.batch_size);
  num("lr", r.lr);
  num("min_lr", r.min_lr);
  num("warmup_steps", r.warmup_steps);
  num("weight_decay", r.weight_decay);
  num("seed", r.seed);
  r.validate();
  return r;
}

PromptFormats prompt_formats_from(const TrainConfig& config) { return {config.teacher, config.model}; }

std::string recipe_hash(const PretrainRecipe& recipe, const PromptFormats& formats) {
  const nlohmann::json key = {
      {"recipe", recipe.to_json()},
      {"corpus_version", kCorpusVersion},
      {"reprompt", formats.teacher.reprompt_template},
      {"solution", formats.teacher.solution_template},
      {"feedback", formats.teacher.feedback_template},
      {"reference", formats.teacher.reference_template},
      {"chat_format", formats.model.chat_format},
      {"enable_thinking", formats.model.enable_thinking},
      {"system_prompt", formats.model.system_prompt}};
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(key.dump())));
  return hex;
}

// The teacher templates with a passed rollout's own response as its solution: the context the
// corpus's feedback_correct examples teach (teacher.passed_without_sibling: own_response).
TeacherSection own_response_teacher(TeacherSection teacher) {
  teacher.passed_without_sibling = "own_response";
  return teacher;
}

CorpusExample correct_context_example(const TeacherSection& teacher, const std::string& kind, const std::string& prompt,
                                      bool self_correct, const std::string& self_response, const std::string& right,
                                      const std::optional<std::string>& reference) {
  CorpusExample e;
  e.kind = kind;
  e.response = right;
  e.correct = true;
  if (kind == "feedback_correct") {
    const auto message = teacher_message(own_response_teacher(teacher), "feedback", prompt, {{true, right, ""}}, 0,
                                         std::nullopt);
    if (!message) throw std::logic_error("teacher_message gave no own_response context for a passed rollout");
    e.user_message = *message;
    return e;
  }
  if (kind != "solution" && kind != "reference") {
    throw std::invalid_argument("kind: '" + kind + "' is not a context whose answer is the right one");
  }
  const std::vector<RolloutView> group = {{self_correct, self_response, ""}, {true, right, ""}};
  const auto message = teacher_message(teacher, kind == "solution" ? "feedback" : "reference", prompt, group, 0, reference);
  if (!message) throw std::logic_error("teacher_message gave no context for a group with a correct sibling");
  e.user_message = *message;
  return e;
}

std::string grader_feedback(const Problem& problem, const std::string& response) {
  graders::GradeContext context;  // the math grader runs no code: no sandbox
  return graders::grade(graders::Registry::builtin(), to_task(problem), response, graders::GradeOptions{}, context)
      .feedback;
}

bool grader_accepts(const Problem& problem, const std::string& response) {
  graders::GradeContext context;
  return graders::grade(graders::Registry::builtin(), to_task(problem), response, graders::GradeOptions{}, context)
      .passed;
}

CorpusSampler::CorpusSampler(PretrainRecipe recipe, PromptFormats formats, std::vector<Problem> pool)
    : recipe_(std::move(recipe)), formats_(std::move(formats)), pool_(std::move(pool)) {
  if (pool_.empty()) throw std::invalid_argument("pool: no problems to draw the corpus from");
}

CodeSplitSpec code_split_of(const PretrainRecipe& recipe) {
  return {recipe.split.seed, recipe.split.heldout_fraction, recipe.variants_per_rule};
}

std::string draw_corpus_kind(const PretrainRecipe& recipe, std::mt19937_64& rng) {
  const double total = recipe.mix_student + recipe.mix_solution + recipe.mix_reference + recipe.mix_feedback +
                       recipe.mix_feedback_correct;
  double u = uniform01(rng) * total;
  if ((u -= recipe.mix_student) < 0) return "student";
  if ((u -= recipe.mix_solution) < 0) return "solution";
  if ((u -= recipe.mix_reference) < 0) return "reference";
  if ((u -= recipe.mix_feedback) < 0) return "feedback";
  return "feedback_correct";
}

CorpusExample CorpusSampler::next(std::mt19937_64& rng) const {
  const Problem& p = pool_[rng() % pool_.size()];
  return make(p, draw_corpus_kind(recipe_, rng), rng);
}

CorpusExample CorpusSampler::make(const Problem& p, const std::string& kind, std::mt19937_64& rng) const {
  CorpusExample e;
  e.kind = kind;
  const std::string correct = boxed_response(p.answer());
  if (kind == "student") {
    const double p_correct = p.operation == Operation::add ? recipe_.add_correct : recipe_.subtract_correct;
    e.correct = uniform01(rng) < p_correct;
    e.user_message = p.prompt();
    e.response = e.correct ? correct : boxed_response(plausible_wrong_answer(p, rng));
    return e;
  }
  if (kind == "solution" || kind == "reference") {
    // The rollout being taught may itself be right or wrong; its sibling (or the reference) is right.
    const bool self_correct = uniform01(rng) < 0.5;
    const std::string self = self_correct ? correct : boxed_response(plausible_wrong_answer(p, rng));
    return correct_context_example(formats_.teacher, kind, p.prompt(), self_correct, self, correct,
                                   reference_solution(to_task(p)));
  }
  if (kind == "feedback") {
    const int rejected = plausible_wrong_answer(p, rng);
    const std::string rejected_response = boxed_response(rejected);
    std::vector<RolloutView> group = {{false, rejected_response, grader_feedback(p, rejected_response)}};
    const auto message = teacher_message(formats_.teacher, "feedback", p.prompt(), group, 0, std::nullopt);
    // A grader that gives no feedback for a wrong answer leaves the teacher without context; the
    // trainer masks such rollouts, so the corpus teaches the plain prompt instead.
    e.user_message = message ? *message : p.prompt();
    e.correct = uniform01(rng) < recipe_.after_feedback_correct;
    e.response = e.correct ? correct : boxed_response(sample_wrong_excluding(p, rejected, rng));
    return e;
  }
  if (kind == "feedback_correct") {
    // A passed rollout with no passed sibling, under teacher.passed_without_sibling: own_response
    // (the trainer masks it by default): its own answer as the solution, which the right
    // continuation keeps.
    return correct_context_example(formats_.teacher, kind, p.prompt(), true, correct, correct, std::nullopt);
  }
  throw std::invalid_argument("kind: unknown corpus example kind '" + kind + "'");
}

double corpus_loss(model::CausalLM& model, const text::Tokenizer& tokenizer, const PromptFormats& formats,
                   const std::vector<CorpusExample>& examples) {
  if (examples.empty()) throw std::invalid_argument("examples: empty");
  torch::NoGradGuard no_grad;
  const PromptRenderer renderer(formats.model, tokenizer);
  const text::ChatFormat format = chat_format_for(formats, tokenizer);
  const int32_t pad_id = tokenizer.pad_token_id().value_or(0);
  double total = 0.0;
  std::size_t tokens = 0;
  for (std::size_t i = 0; i < examples.size(); i += 64) {
    std::vector<TokenizedExample> batch;
    std::size_t batch_tokens = 0;
    for (std::size_t j = i; j < std::min(examples.size(), i + 64); ++j) {
      batch.push_back(tokenize(examples[j], tokenizer, renderer, format));
      batch_tokens += batch.back().response.size();
    }
    total += response_loss(model, batch, pad_id).item<double>() * static_cast<double>(batch_tokens);
    tokens += batch_tokens;
  }
  return total / static_cast<double>(tokens);
}

PretrainRun run_pretraining(const PretrainRecipe& recipe, const PromptFormats& formats,
                            const std::filesystem::path& tokenizer_dir,
                            const std::function<void(const std::string&)>& log) {
  recipe.validate();
  // An empty log callback means: no progress output.
  const auto emit = [&log](const std::string& line) { if (log) log(line); };
  const auto start = Clock::now();
  std::unique_ptr<CorpusSource> train_source, heldout_source;
  if (recipe.domain == "code") {
    const CodeTaskPools pools = make_code_pools(code_split_of(recipe));
    train_source = std::make_unique<CodeCorpusSampler>(recipe, formats, pools.train);
    heldout_source = std::make_unique<CodeCorpusSampler>(recipe, formats, pools.heldout);
  } else {
    const ProblemPools pools = make_pools(recipe.split);
    train_source = std::make_unique<CorpusSampler>(recipe, formats, pools.train);
    heldout_source = std::make_unique<CorpusSampler>(recipe, formats, pools.heldout);
  }
  const CorpusSource& train_corpus = *train_source;
  const CorpusSource& heldout_corpus = *heldout_source;

  // A byte-level BPE tokenizer whose merges are learned from the corpus text (without the special
  // tokens, which are matched whole).
  std::mt19937_64 corpus_rng(recipe.seed * 0x9e3779b97f4a7c15ULL + 1);
  std::vector<std::string> texts = {"user", "assistant", "system"};
  for (int i = 0; i < 2000; ++i) {
    const CorpusExample e = train_corpus.next(corpus_rng);
    texts.push_back(e.user_message);
    texts.push_back(e.response);
  }
  text::ByteLevelTokenizerSpec spec;
  spec.merges = text::learn_bpe_merges(texts, recipe.bpe_merges);
  text::write_byte_level_tokenizer(tokenizer_dir, spec);
  PretrainRun run{text::Tokenizer::from_model_dir(tokenizer_dir)};
  const int32_t pad_id = run.tokenizer.pad_token_id().value_or(0);

  model::ModelConfig config;
  config.family = model::Family::qwen3;
  config.vocab_size = run.tokenizer.vocab_size();
  config.hidden_size = recipe.hidden_size;
  config.intermediate_size = recipe.intermediate_size;
  config.num_hidden_layers = recipe.num_layers;
  config.num_attention_heads = recipe.num_heads;
  config.num_key_value_heads = recipe.num_kv_heads;
  config.head_dim = recipe.hidden_size / recipe.num_heads;
  config.tie_word_embeddings = true;
  config.max_position_embeddings = 512;
  config.eos_token_id = run.tokenizer.eos_token_ids().empty() ? std::nullopt
                                                              : std::optional<int64_t>(run.tokenizer.eos_token_ids()[0]);
  config.pad_token_id = pad_id;
  run.model = model::make_random(config, recipe.seed);

  const PromptRenderer renderer(formats.model, run.tokenizer);
  const text::ChatFormat format = chat_format_for(formats, run.tokenizer);

  // A fixed held-out sample (problems never trained on) to measure the loss before and after.
  std::mt19937_64 heldout_rng(recipe.seed ^ 0x5eed5eedULL);
  std::vector<CorpusExample> heldout_examples;
  for (int i = 0; i < 256; ++i) heldout_examples.push_back(heldout_corpus.next(heldout_rng));
  run.initial_loss = corpus_loss(run.model, run.tokenizer, formats, heldout_examples);
  emit("pretrain: vocab " + std::to_string(config.vocab_size) + ", " + std::to_string(recipe.num_layers) +
      " layers x " + std::to_string(recipe.hidden_size) + ", held-out loss before " +
      std::to_string(run.initial_loss));

  torch::optim::AdamW optimizer(run.model->parameters(),
                                torch::optim::AdamWOptions(recipe.lr).weight_decay(recipe.weight_decay));
  std::mt19937_64 rng(recipe.seed + 12345);
  double running = 0.0;
  for (int step = 1; step <= recipe.steps; ++step) {
    // Linear warm-up, then cosine decay to min_lr.
    double lr = recipe.lr;
    if (step <= recipe.warmup_steps) {
      lr = recipe.lr * step / std::max(1, recipe.warmup_steps);
    } else {
      const double progress = static_cast<double>(step - recipe.warmup_steps) /
                              std::max(1, recipe.steps - recipe.warmup_steps);
      lr = recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1.0 + std::cos(M_PI * progress));
    }
    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);

    std::vector<TokenizedExample> batch;
    for (int i = 0; i < recipe.batch_size; ++i)
      batch.push_back(tokenize(train_corpus.next(rng), run.tokenizer, renderer, format));
    // Short plain prompts and long re-prompts padded together waste most of the compute: sort by
    // length and split into the two buckets with the fewest padded tokens. The loss is the same
    // mean over all response tokens of the batch (each bucket weighted by its token count).
    const auto length = [](const TokenizedExample& e) { return e.prompt.size() + e.response.size(); };
    std::stable_sort(batch.begin(), batch.end(),
                     [&](const TokenizedExample& a, const TokenizedExample& b) { return length(a) < length(b); });
    std::size_t split = batch.size(), best_cost = batch.size() * length(batch.back());
    for (std::size_t s = 1; s < batch.size(); ++s) {
      const std::size_t cost = s * length(batch[s - 1]) + (batch.size() - s) * length(batch.back());
      if (cost < best_cost) best_cost = cost, split = s;
    }
    std::size_t total_tokens = 0;
    for (const auto& e : batch) total_tokens += e.response.size();
    optimizer.zero_grad();
    double value = 0.0;
    for (auto [lo, hi] : {std::pair<std::size_t, std::size_t>{0, split}, {split, batch.size()}}) {
      if (lo == hi) continue;
      const std::vector<TokenizedExample> bucket(batch.begin() + lo, batch.begin() + hi);
      std::size_t bucket_tokens = 0;
      for (const auto& e : bucket) bucket_tokens += e.response.size();
      torch::Tensor loss = response_loss(run.model, bucket, pad_id) *
                           (static_cast<double>(bucket_tokens) / static_cast<double>(total_tokens));
      loss.backward();
      value += loss.item<double>();
    }
    torch::nn::utils::clip_grad_norm_(run.model->parameters(), 1.0);
    optimizer.step();
    running = step == 1 ? value : 0.95 * running + 0.05 * value;
    if (step % 50 == 0 || step == recipe.steps) {
      char line[160];
      std::snprintf(line, sizeof line, "pretrain: step %d/%d  loss %.4f  lr %.2e  %.0fs", step, recipe.steps,
                    running, lr, seconds_since(start));
      emit(line);
    }
  }
  run.model->eval();
  run.final_loss = corpus_loss(run.model, run.tokenizer, formats, heldout_examples);
  run.seconds = seconds_since(start);
  emit("pretrain: held-out loss after " + std::to_string(run.final_loss));
  return run;
}

namespace {

// The accuracy report's contexts, in report order.
const std::vector<std::string>& accuracy_contexts() {
  static const std::vector<std::string> contexts = {"student",          "teacher_solution",         "teacher_reference",
                                                    "teacher_feedback", "teacher_feedback_correct", "student_greedy"};
  return contexts;
}

// avg@n of `samples` samples at temperature 1 (one greedy sample for student_greedy) per item and
// context: `message_for(item, context, rng)` builds the user message, `accepts(items, texts)` grades
// a whole context's responses at once.
template <typename Item>
nlohmann::json measure_contexts(
    model::CausalLM& model, const text::Tokenizer& tokenizer, const PromptFormats& formats,
    const std::vector<Item>& items, int samples, uint64_t seed, int max_new_tokens,
    const std::function<std::string(const Item&, const std::string&, std::mt19937_64&)>& message_for,
    const std::function<std::vector<bool>(const std::vector<const Item*>&, const std::vector<std::string>&)>& accepts) {
  if (samples <= 0) throw std::invalid_argument("samples: must be positive");
  const PromptRenderer renderer(formats.model, tokenizer);
  std::mt19937_64 rng(seed);
  nlohmann::json result = nlohmann::json::object();
  for (const std::string& context : accuracy_contexts()) {
    std::vector<std::vector<int32_t>> prompts;
    std::vector<const Item*> owners;
    for (const Item& item : items) {
      const auto tokens = renderer.encode(message_for(item, context, rng));
      const int n = context == "student_greedy" ? 1 : samples;  // greedy: one answer per item
      for (int s = 0; s < n; ++s) prompts.push_back(tokens), owners.push_back(&item);
    }
    model::SamplingParams params;
    params.temperature = context == "student_greedy" ? 0.0 : 1.0;
    params.max_new_tokens = max_new_tokens;
    params.seed = seed + 7;
    std::vector<std::string> texts;
    for (const auto& g : generate_in_batches(model, tokenizer, prompts, params, 128)) texts.push_back(g.text);
    const std::vector<bool> accepted = accepts(owners, texts);
    const auto correct = std::count(accepted.begin(), accepted.end(), true);
    result[context] = static_cast<double>(correct) / static_cast<double>(accepted.size());
  }
  return result;
}

}  // namespace

nlohmann::json measure_context_accuracy(model::CausalLM& model, const text::Tokenizer& tokenizer,
                                        const PromptFormats& formats, const std::vector<Problem>& problems,
                                        int samples, uint64_t seed) {
  const auto message_for = [&](const Problem& p, const std::string& context, std::mt19937_64& rng) {
    if (context == "teacher_solution" || context == "teacher_reference") {
      std::vector<RolloutView> group = {{false, boxed_response(plausible_wrong_answer(p, rng)), ""},
                                        {true, boxed_response(p.answer()), ""}};
      return *teacher_message(formats.teacher, context == "teacher_solution" ? "feedback" : "reference", p.prompt(),
                              group, 0, reference_solution(to_task(p)));
    }
    if (context == "teacher_feedback") {
      const std::string wrong = boxed_response(plausible_wrong_answer(p, rng));
      std::vector<RolloutView> group = {{false, wrong, grader_feedback(p, wrong)}};
      return teacher_message(formats.teacher, "feedback", p.prompt(), group, 0, std::nullopt).value_or(p.prompt());
    }
    if (context == "teacher_feedback_correct") {
      // own_response reads only the rollout's response, so no grader call is needed here.
      std::vector<RolloutView> group = {{true, boxed_response(p.answer()), ""}};
      return teacher_message(own_response_teacher(formats.teacher), "feedback", p.prompt(), group, 0, std::nullopt)
          .value_or(p.prompt());
    }
    return p.prompt();
  };
  const auto accepts = [](const std::vector<const Problem*>& owners, const std::vector<std::string>& texts) {
    std::vector<bool> out;
    for (std::size_t i = 0; i < texts.size(); ++i) out.push_back(grader_accepts(*owners[i], texts[i]));
    return out;
  };
  return measure_contexts<Problem>(model, tokenizer, formats, problems, samples, seed, 16, message_for, accepts);
}

nlohmann::json measure_code_context_accuracy(model::CausalLM& model, const text::Tokenizer& tokenizer,
                                             const PromptFormats& formats, const std::vector<CodeTask>& tasks,
                                             int samples, uint64_t seed, const PretrainRecipe& recipe) {
  const auto message_for = [&](const CodeTask& task, const std::string& context, std::mt19937_64& rng) {
    const std::string right = word_program(task.rule);
    if (context == "teacher_solution" || context == "teacher_reference") {
      const WrongProgram wrong = plausible_wrong_program(task, rng);
      std::vector<RolloutView> group = {{false, word_program(wrong.rule, wrong.bug), ""}, {true, right, ""}};
      return *teacher_message(formats.teacher, context == "teacher_solution" ? "feedback" : "reference",
                              task.prompt(), group, 0, reference_solution(task.to_task()));
    }
    if (context == "teacher_feedback") {
      // The env's feedback alone: no sibling, no reference.
      const std::string program = rejected_code_program(task, recipe, rng);
      const auto graded = grade_code_response(task, program);
      std::vector<RolloutView> group = {{graded.passed, program, graded.feedback, graded.informative}};
      return teacher_message(formats.teacher, "feedback", task.prompt(), group, 0, std::nullopt)
          .value_or(task.prompt());
    }
    if (context == "teacher_feedback_correct") {
      std::vector<RolloutView> group = {{true, right, "", false}};
      return teacher_message(own_response_teacher(formats.teacher), "feedback", task.prompt(), group, 0, std::nullopt)
          .value_or(task.prompt());
    }
    return task.prompt();
  };
  const auto accepts = [](const std::vector<const CodeTask*>& owners, const std::vector<std::string>& texts) {
    std::vector<bool> out;
    for (const auto& graded : grade_code_responses(owners, texts)) out.push_back(graded.passed);
    return out;
  };
  return measure_contexts<CodeTask>(model, tokenizer, formats, tasks, samples, seed, 96, message_for, accepts);
}

// FNV-1a over every parameter's float32 bytes in name order: equal exactly when the weights are.
static std::string weights_fingerprint(model::CausalLM& model) {
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& item : model->named_parameters()) {
    by_name[item.key()] = item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
  }
  std::string bytes;
  for (const auto& [name, tensor] : by_name) {
    bytes += name;
    bytes.append(static_cast<const char*>(tensor.data_ptr()), static_cast<std::size_t>(tensor.numel()) * sizeof(float));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(bytes)));
  return hex;
}

PretrainReport pretrain_or_reuse(const PretrainRecipe& recipe, const PromptFormats& formats,
                                 const PretrainOptions& options) {
  recipe.validate();
  const std::string hash = recipe_hash(recipe, formats);
  PretrainReport report;
  report.model_dir = options.cache_root / ("demo-model-" + hash);
  const auto report_path = report.model_dir / "demo_report.json";
  if (!options.force && std::filesystem::exists(report_path)) {
    std::ifstream in(report_path);
    try {
      report.summary = nlohmann::json::parse(in);
      report.reused = true;
      options.log("pretrain: reusing cached model " + report.model_dir.string());
      return report;
    } catch (const nlohmann::json::exception&) {
      options.log("pretrain: cached report unreadable, retraining");
    }
  }
  // Build in a scratch directory and rename at the end, so an interrupted run never leaves a
  // directory that looks complete.
  const auto scratch = options.cache_root / ("demo-model-" + hash + ".partial");
  std::filesystem::remove_all(scratch);
  std::filesystem::create_directories(scratch);
  PretrainRun run = run_pretraining(recipe, formats, scratch / "tokenizer", options.log);
  model::save_pretrained(run.model, scratch / "model", torch::kFloat32, scratch / "tokenizer");

  nlohmann::json accuracy;
  std::size_t probe_size = 0;
  if (recipe.domain == "code") {
    const CodeTaskPools pools = make_code_pools(code_split_of(recipe));
    const auto probe = sample_code_tasks(
        pools.heldout, std::min<std::size_t>(options.accuracy_prompts, pools.heldout.size()), recipe.seed + 99);
    probe_size = probe.size();
    options.log("pretrain: measuring student and teacher accuracy on " + std::to_string(probe_size) +
                " held-out code tasks (real sandbox)");
    accuracy = measure_code_context_accuracy(run.model, run.tokenizer, formats, probe, options.accuracy_samples,
                                             recipe.seed + 5, recipe);
  } else {
    const ProblemPools pools = make_pools(recipe.split);
    const auto probe = sample_problems(
        pools.heldout, std::min<std::size_t>(options.accuracy_prompts, pools.heldout.size()), recipe.seed + 99);
    probe_size = probe.size();
    options.log("pretrain: measuring student and teacher accuracy on " + std::to_string(probe_size) +
                " held-out problems");
    accuracy = measure_context_accuracy(run.model, run.tokenizer, formats, probe, options.accuracy_samples,
                                        recipe.seed + 5);
  }
  report.summary = {{"recipe", recipe.to_json()},
                    {"recipe_hash", hash},
                    {"heldout_loss_before", run.initial_loss},
                    {"heldout_loss_after", run.final_loss},
                    {"pretrain_seconds", run.seconds},
                    {"parameters", [&] {
                       int64_t n = 0;
                       for (const auto& p : run.model->parameters()) n += p.numel();
                       return n;
                     }()},
                    {"accuracy_avg_at_n", accuracy},
                    // Two machines made the same model exactly when these agree (trainer/reproducible.h).
                    {"kernels", kernel_pinning()},
                    {"weights_fnv1a64", weights_fingerprint(run.model)},
                    {"domain", recipe.domain},
                    {"accuracy_prompts", probe_size},
                    {"accuracy_samples", options.accuracy_samples}};
  // The model directory is what users point model.path at; the report sits beside it.
  std::filesystem::remove_all(report.model_dir);
  std::filesystem::create_directories(report.model_dir.parent_path());
  std::filesystem::rename(scratch / "model", report.model_dir);
  std::filesystem::remove_all(scratch);
  std::ofstream(report_path) << report.summary.dump(2) << '\n';
  return report;
}

}  // namespace distil::trainer::demo
