// The code domain's pretraining corpus (trainer/demo/demo_pretrain.h): student-format programs with
// factor mistakes and bugs, and re-prompts in the trainer's exact teacher formats, whose feedback
// is the real code grader's text on a real sandbox run.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "sandbox/sandbox.h"
#include "trainer/demo/demo_pretrain.h"
#include "trainer/rollout.h"
#include "trainer/teacher.h"

namespace distil::trainer::demo {
namespace {

double uniform01(std::mt19937_64& rng) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }

sandbox::Sandbox& demo_sandbox() {
  static sandbox::Sandbox instance{sandbox::Config{}};
  return instance;
}

}  // namespace

struct CodeCorpusSampler::FeedbackCache {
  std::mutex mutex;
  std::map<std::string, graders::GradeResult> results;  // task id + program -> graded
  // Graded (task, wrong program) pairs that next() draws its feedback examples from: one sandbox
  // run each, made up front on every core instead of one at a time inside the training loop.
  struct Banked {
    std::size_t task;
    std::string program;
    graders::GradeResult graded;
  };
  std::once_flag bank_once;
  std::vector<Banked> bank;
};


graders::GradeResult grade_code_response(const CodeTask& task, const std::string& response) {
  graders::GradeContext context;
  context.sandbox = &demo_sandbox();
  return graders::grade(graders::Registry::builtin(), task.to_task(), response, graders::GradeOptions{}, context);
}

std::vector<graders::GradeResult> grade_code_responses(const std::vector<const CodeTask*>& tasks,
                                                       const std::vector<std::string>& responses) {
  if (tasks.size() != responses.size()) throw std::invalid_argument("grade_code_responses: sizes differ");
  std::vector<graders::GradeResult> results(tasks.size());
  std::atomic<std::size_t> next{0};
  std::mutex error_mutex;
  std::string error;
  auto work = [&] {
    for (std::size_t i = next++; i < tasks.size(); i = next++) {
      try {
        results[i] = grade_code_response(*tasks[i], responses[i]);
      } catch (const std::exception& e) {
        std::lock_guard lock(error_mutex);
        if (error.empty()) error = e.what();
      }
    }
  };
  const unsigned workers = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < workers; ++w) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  if (!error.empty()) throw std::runtime_error("grading demo code responses: " + error);
  return results;
}

WordRule misconceived_rule(const WordRule& rule) {
  WordRule confused = rule;
  if (rule.letter_case == WordCase::capitalize) confused.letter_case = WordCase::upper;
  const auto& separators = word_separators();
  auto index_of = [&](char symbol) {
    for (std::size_t i = 0; i < separators.size(); ++i)
      if (separators[i].symbol == symbol) return static_cast<int>(i);
    throw std::logic_error("misconceived_rule: no separator '" + std::string(1, symbol) + "'");
  };
  static const std::pair<char, char> look_alikes[] = {{'-', '_'}, {':', ','}, {'/', '.'}};
  for (auto [from, to] : look_alikes)
    if (rule.separator == index_of(from)) confused.separator = index_of(to);
  return confused;
}

std::string sample_student_program(const CodeTask& task, double factor_correct, double bug_rate, double misconception,
                                   std::mt19937_64& rng) {
  WordRule rule = task.rule;
  const WordRule confused = misconceived_rule(task.rule);
  const int n_sep = static_cast<int>(word_separators().size());
  if (uniform01(rng) >= factor_correct) rule.order = static_cast<WordOrder>((static_cast<int>(rule.order) + 1 + rng() % 2) % 3);
  // A misconception replaces the factor-correct draw: the look-alike, or else the usual draw.
  if (confused.letter_case != rule.letter_case && misconception > 0 && uniform01(rng) < misconception) {
    rule.letter_case = confused.letter_case;
  } else if (uniform01(rng) >= factor_correct) {
    rule.letter_case = static_cast<WordCase>((static_cast<int>(rule.letter_case) + 1 + rng() % 2) % 3);
  }
  if (confused.separator != rule.separator && misconception > 0 && uniform01(rng) < misconception) {
    rule.separator = confused.separator;
  } else if (uniform01(rng) >= factor_correct) {
    rule.separator = (rule.separator + 1 + static_cast<int>(rng() % (n_sep - 1))) % n_sep;
  }
  CodeBug bug = CodeBug::none;
  if (uniform01(rng) < bug_rate) bug = rng() % 5 < 3 ? CodeBug::undefined_name : CodeBug::missing_split;
  return word_program(rule, bug);
}

CodeCorpusSampler::CodeCorpusSampler(PretrainRecipe recipe, PromptFormats formats, std::vector<CodeTask> pool,
                                     std::size_t feedback_bank)
    : recipe_(std::move(recipe)), formats_(std::move(formats)), pool_(std::move(pool)), feedback_bank_(feedback_bank),
      cache_(std::make_unique<FeedbackCache>()) {
  if (pool_.empty()) throw std::invalid_argument("pool: no code tasks to draw the corpus from");
  if (feedback_bank_ == 0) throw std::invalid_argument("feedback_bank: must be positive");
}

CodeCorpusSampler::~CodeCorpusSampler() = default;

CorpusExample CodeCorpusSampler::next(std::mt19937_64& rng) const {
  const CodeTask& task = pool_[rng() % pool_.size()];
  const std::string kind = draw_corpus_kind(recipe_, rng);
  if (kind != "feedback") return make(task, kind, rng);
  std::call_once(cache_->bank_once, [this] {
    std::mt19937_64 bank_rng(recipe_.seed * 0x9e3779b97f4a7c15ULL + 77);
    std::vector<const CodeTask*> tasks;
    std::vector<std::string> programs;
    std::vector<std::size_t> indices;
    for (std::size_t i = 0; i < feedback_bank_; ++i) {
      const std::size_t t = bank_rng() % pool_.size();
      indices.push_back(t), tasks.push_back(&pool_[t]), programs.push_back(rejected_code_program(pool_[t], recipe_, bank_rng));
    }
    auto graded = grade_code_responses(tasks, programs);
    for (std::size_t i = 0; i < graded.size(); ++i) cache_->bank.push_back({indices[i], programs[i], std::move(graded[i])});
  });
  const auto& banked = cache_->bank[rng() % cache_->bank.size()];
  return feedback_example(pool_[banked.task], banked.program, banked.graded, rng);
}

std::string rejected_code_program(const CodeTask& task, const PretrainRecipe& recipe, std::mt19937_64& rng) {
  // With misconceptions the teacher must learn to correct the student's own kind of mistake, so the
  // rejected programs are the student's wrong ones; otherwise any plausible wrong program.
  if (recipe.code_misconception > 0) {
    const std::string right = word_program(task.rule);
    for (int attempt = 0; attempt < 1000; ++attempt) {
      std::string program = sample_student_program(task, recipe.code_factor_correct, recipe.code_bug_rate,
                                                   recipe.code_misconception, rng);
      if (program != right) return program;
    }
  }
  const WrongProgram wrong = plausible_wrong_program(task, rng);
  return word_program(wrong.rule, wrong.bug);
}

CorpusExample CodeCorpusSampler::feedback_example(const CodeTask& task, const std::string& rejected,
                                                  const graders::GradeResult& graded, std::mt19937_64& rng) const {
  CorpusExample e;
  e.kind = "feedback";
  std::vector<RolloutView> group = {{graded.passed, rejected, graded.feedback, graded.informative}};
  const auto message = teacher_message(formats_.teacher, "feedback", task.prompt(), group, 0, std::nullopt);
  e.user_message = message ? *message : task.prompt();
  e.correct = uniform01(rng) < recipe_.code_after_feedback_correct;
  if (e.correct) {
    e.response = word_program(task.rule);
  } else {
    do {
      const WrongProgram other = plausible_wrong_program(task, rng);
      e.response = word_program(other.rule, other.bug);
    } while (e.response == rejected);
  }
  return e;
}

CorpusExample CodeCorpusSampler::make(const CodeTask& task, const std::string& kind, std::mt19937_64& rng) const {
  const std::string right = word_program(task.rule);
  if (kind == "student") {
    CorpusExample e;
    e.kind = kind;
    e.user_message = task.prompt();
    e.response = sample_student_program(task, recipe_.code_factor_correct, recipe_.code_bug_rate, recipe_.code_misconception, rng);
    e.correct = e.response == right;
    return e;
  }
  if (kind == "solution" || kind == "reference") {
    const bool self_correct = uniform01(rng) < 0.5;
    const WrongProgram wrong = plausible_wrong_program(task, rng);
    return correct_context_example(formats_.teacher, kind, task.prompt(), self_correct,
                                   self_correct ? right : word_program(wrong.rule, wrong.bug), right,
                                   reference_solution(task.to_task()));
  }
  if (kind == "feedback") {
    // The real grader's feedback on a real run of a wrong program: the failing test's input, the
    // program's output and the expected output, or the traceback.
    const std::string rejected = rejected_code_program(task, recipe_, rng);
    graders::GradeResult graded;
    {
      const std::string key = task.id() + '\n' + rejected;
      std::unique_lock lock(cache_->mutex);
      auto it = cache_->results.find(key);
      if (it == cache_->results.end()) {
        lock.unlock();
        graded = grade_code_response(task, rejected);
        lock.lock();
        cache_->results.emplace(key, graded);
      } else {
        graded = it->second;
      }
    }
    return feedback_example(task, rejected, graded, rng);
  }
  if (kind == "feedback_correct") {
    return correct_context_example(formats_.teacher, kind, task.prompt(), true, right, right, std::nullopt);
  }
  throw std::invalid_argument("kind: unknown corpus example kind '" + kind + "'");
}

}  // namespace distil::trainer::demo
