// Pretraining the demo's tiny Qwen3-family model from scratch on generated text (no downloads),
// so that it is a mediocre solver of the demo tasks but can use a teacher context: the corpus
// mixes student-format examples whose answers are right only some of the time (the rest are
// plausible mistakes) with re-prompt examples in the trainer's exact teacher formats (a correct
// sibling solution, a reference solution, or the env's feedback on a wrong answer) whose
// responses are right. The result is written as a Hugging Face model directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "graders/grader.h"
#include "trainer/config.h"
#include "trainer/demo/demo_code_tasks.h"
#include "trainer/demo/demo_tasks.h"
#include "trainer/model/model.h"
#include "trainer/text/tokenizer.h"

namespace distil::trainer::demo {

// Everything that determines the pretrained model; its hash names the cache directory.
struct PretrainRecipe {
  // arithmetic (two-digit sums, one bit of feedback) | code (word-pipeline programs, graded in the
  // sandbox, feedback with the failing test). The only key that is not a number.
  std::string domain = "arithmetic";
  SplitSpec split;  // seed and held-out fraction, for either domain
  // code: tasks (test sets) per rule; the probability that each of a student-format program's
  // three factors is right; the share of student programs with a bug (a misspelt name, a missing
  // .split()); how often the program after the grader's feedback on a wrong one is right.
  int variants_per_rule = 20;
  double code_factor_correct = 0.75;
  double code_bug_rate = 0.10;
  double code_after_feedback_correct = 0.85;
  // Systematic misconceptions of the student (0 = none): for the confusable factor values of
  // code_misconception_of() (capitalize -> upper; dashes -> underscores, colons -> commas,
  // slashes -> dots) a student-format program writes the look-alike this often, so its *mode* is
  // wrong there and sampling more (or sharpening) cannot fix it; what the failing test shows can.
  double code_misconception = 0.0;
  // Probability that a student-format answer in the corpus is correct (the mediocrity knob).
  double add_correct = 0.70;
  double subtract_correct = 0.55;
  // After feedback saying the previous answer was wrong, the corpus answer is correct this often
  // (and never repeats the rejected answer).
  double after_feedback_correct = 0.70;
  // Corpus mixture weights (normalised): plain prompts, sibling-solution re-prompts,
  // reference-solution re-prompts, feedback re-prompts on a wrong answer, and feedback re-prompts
  // on the rollout's own *correct* answer (the trainer's context for a passed rollout with no
  // passed sibling: the grader's "Correct." inside the feedback template; the answer is kept).
  double mix_student = 0.60;
  double mix_solution = 0.20;
  double mix_reference = 0.05;
  double mix_feedback = 0.10;
  double mix_feedback_correct = 0.05;
  int bpe_merges = 160;
  int64_t hidden_size = 128;
  int64_t num_layers = 3;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t intermediate_size = 384;
  int steps = 900;
  int batch_size = 64;
  double lr = 3e-3;
  double min_lr = 3e-4;
  int warmup_steps = 40;
  double weight_decay = 0.01;
  uint64_t seed = 0;

  // Throws std::invalid_argument naming the field.
  void validate() const;
  nlohmann::json to_json() const;
  // Reads the keys present in `j` over the defaults; unknown keys are errors naming the key.
  static PretrainRecipe from_json(const nlohmann::json& j);
};

// The teacher/chat settings the corpus must match (from the training config).
struct PromptFormats {
  TeacherSection teacher;
  ModelSection model;
};
PromptFormats prompt_formats_from(const TrainConfig& config);

// 16 hex digits identifying recipe + prompt formats + corpus version.
std::string recipe_hash(const PretrainRecipe& recipe, const PromptFormats& formats);

struct CorpusExample {
  std::string kind;          // student | solution | reference | feedback | feedback_correct
  std::string user_message;  // before chat formatting
  std::string response;      // without the end-of-turn marker
  bool correct = false;
};

// Where pretraining draws its examples from: one domain's pool.
class CorpusSource {
 public:
  virtual ~CorpusSource() = default;
  virtual CorpusExample next(std::mt19937_64& rng) const = 0;
};

// The teacher templates with teacher.passed_without_sibling: own_response: the context the
// corpus's feedback_correct examples teach and the accuracy report probes.
TeacherSection own_response_teacher(TeacherSection teacher);

// A re-prompt example whose answer is `right`, shared by both domains: kind solution (the group
// also holds a correct sibling), reference (the reference solution) or feedback_correct (a passed
// rollout's own response, under own_response_teacher). `self_response` is the rollout being taught
// (right or wrong; for feedback_correct it is `right`). Throws std::invalid_argument for another kind.
CorpusExample correct_context_example(const TeacherSection& teacher, const std::string& kind, const std::string& prompt,
                                      bool self_correct, const std::string& self_response, const std::string& right,
                                      const std::optional<std::string>& reference);

// The code domain's split from the recipe (split_seed, heldout_fraction, variants_per_rule).
CodeSplitSpec code_split_of(const PretrainRecipe& recipe);

// The mixture kind for one draw (student, solution, reference, feedback, feedback_correct).
std::string draw_corpus_kind(const PretrainRecipe& recipe, std::mt19937_64& rng);

// Draws corpus examples for problems of one pool. The feedback examples carry the real math
// grader's feedback text for a wrong answer.
class CorpusSampler : public CorpusSource {
 public:
  CorpusSampler(PretrainRecipe recipe, PromptFormats formats, std::vector<Problem> pool);
  CorpusExample next(std::mt19937_64& rng) const override;
  CorpusExample make(const Problem& problem, const std::string& kind, std::mt19937_64& rng) const;

 private:
  PretrainRecipe recipe_;
  PromptFormats formats_;
  std::vector<Problem> pool_;
};

// The code domain: the same mixture over word-pipeline tasks. Student programs get each factor
// right with code_factor_correct; feedback examples carry the real code grader's feedback on a
// plausible wrong program, run in the real sandbox (memoised: the corpus revisits programs).
class CodeCorpusSampler : public CorpusSource {
 public:
  // `feedback_bank`: graded wrong programs next() draws feedback examples from.
  CodeCorpusSampler(PretrainRecipe recipe, PromptFormats formats, std::vector<CodeTask> pool,
                    std::size_t feedback_bank = 1024);
  ~CodeCorpusSampler() override;
  CorpusExample next(std::mt19937_64& rng) const override;
  CorpusExample make(const CodeTask& task, const std::string& kind, std::mt19937_64& rng) const;

 private:
  CorpusExample feedback_example(const CodeTask& task, const std::string& rejected,
                                 const graders::GradeResult& graded, std::mt19937_64& rng) const;
  struct FeedbackCache;
  PretrainRecipe recipe_;
  PromptFormats formats_;
  std::vector<CodeTask> pool_;
  std::size_t feedback_bank_;
  std::unique_ptr<FeedbackCache> cache_;
};

// A wrong program to show the grader's feedback on: the student's own wrong program when the recipe
// has misconceptions (the mistakes training will show the teacher), else plausible_wrong_program.
std::string rejected_code_program(const CodeTask& task, const PretrainRecipe& recipe, std::mt19937_64& rng);

// The real code grader's result for `response` on `task`, in a process-wide sandbox.
graders::GradeResult grade_code_response(const CodeTask& task, const std::string& response);
// Many at once, on every core; results in order.
std::vector<graders::GradeResult> grade_code_responses(const std::vector<const CodeTask*>& tasks,
                                                       const std::vector<std::string>& responses);
// The look-alike a confused student writes for `rule`: capitalize -> upper, dashes -> underscores,
// colons -> commas, slashes -> dots; the other factor values are their own look-alike.
WordRule misconceived_rule(const WordRule& rule);

// A student-format program for `task`: each confusable factor value (misconceived_rule) written
// as its look-alike with probability `misconception`, otherwise each factor right with
// `factor_correct`; a bug with `bug_rate`.
std::string sample_student_program(const CodeTask& task, double factor_correct, double bug_rate, double misconception,
                                   std::mt19937_64& rng);

// The math grader's feedback for `response` on `problem` (graded in-process by the real grader).
std::string grader_feedback(const Problem& problem, const std::string& response);
// Whether the real math grader accepts `response` for `problem`.
bool grader_accepts(const Problem& problem, const std::string& response);

struct PretrainReport {
  std::filesystem::path model_dir;
  bool reused = false;
  nlohmann::json summary;  // losses, timings, student/teacher accuracies (demo_report.json)
};

struct PretrainOptions {
  std::filesystem::path cache_root = "runs/cache";
  bool force = false;          // retrain even when the cache has this recipe
  int accuracy_prompts = 100;  // held-out problems for the student/teacher accuracy report
  int accuracy_samples = 4;
  std::function<void(const std::string&)> log = [](const std::string&) {};
};

// Trains (or reuses) the model for `recipe` in cache_root/demo-model-<hash>, writes
// demo_report.json there and returns it.
PretrainReport pretrain_or_reuse(const PretrainRecipe& recipe, const PromptFormats& formats,
                                 const PretrainOptions& options);

// Student vs teacher accuracy (avg@n at temperature 1) on held-out problems, graded in-process by
// the real math grader: plain prompt; re-prompt with a correct sibling solution; with the
// reference solution; with the grader's feedback on a plausible wrong answer; with the grader's
// "Correct." on the right answer; and the student's greedy (temperature 0) accuracy.
nlohmann::json measure_context_accuracy(model::CausalLM& model, const text::Tokenizer& tokenizer,
                                        const PromptFormats& formats, const std::vector<Problem>& problems,
                                        int samples, uint64_t seed);

// The same table for the code domain, graded by the real code grader in the sandbox: plain
// prompt; a correct sibling program; the reference program; the grader's feedback on a plausible
// wrong program alone (no sibling, no reference); a passed program's own response; greedy.
// `recipe` chooses the wrong programs the feedback context is probed on (rejected_code_program).
nlohmann::json measure_code_context_accuracy(model::CausalLM& model, const text::Tokenizer& tokenizer,
                                             const PromptFormats& formats, const std::vector<CodeTask>& tasks,
                                             int samples, uint64_t seed, const PretrainRecipe& recipe);

// Mean response-token cross-entropy of `model` on `examples` (no gradient).
double corpus_loss(model::CausalLM& model, const text::Tokenizer& tokenizer, const PromptFormats& formats,
                   const std::vector<CorpusExample>& examples);

// One pretraining run in memory (tokenizer included), for tests and pretrain_or_reuse.
struct PretrainRun {
  text::Tokenizer tokenizer;
  model::CausalLM model{nullptr};
  double initial_loss = 0.0;  // on a fixed held-out corpus sample
  double final_loss = 0.0;
  double seconds = 0.0;
};
// Writes the tokenizer files to `tokenizer_dir` (created) and trains.
PretrainRun run_pretraining(const PretrainRecipe& recipe, const PromptFormats& formats,
                            const std::filesystem::path& tokenizer_dir,
                            const std::function<void(const std::string&)>& log);

}  // namespace distil::trainer::demo
