// The demo's task generator (seeded, disjoint splits, every reference answer accepted by the real
// math grader) and its pretraining loop (a tiny run lowers the held-out loss).
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include <unistd.h>

#include <gtest/gtest.h>

#include "graders/grader.h"
#include "tasks/task.h"
#include "trainer/config.h"
#include "trainer/demo/demo_pretrain.h"
#include "trainer/demo/demo_code_tasks.h"
#include "trainer/demo/demo_tasks.h"
#include "trainer/teacher.h"

namespace demo = distil::trainer::demo;

namespace {

std::set<std::string> ids(const std::vector<demo::Problem>& problems) {
  std::set<std::string> out;
  for (const auto& p : problems) out.insert(p.id());
  return out;
}

demo::PromptFormats default_formats() {
  return demo::prompt_formats_from(distil::trainer::load_config_text(distil::trainer::kDefaultConfigYaml));
}

}  // namespace

TEST(DemoTasks, PoolsAreDeterministicDisjointAndCoverTheProblemSpace) {
  const demo::SplitSpec spec{7, 0.2};
  const auto a = demo::make_pools(spec);
  const auto b = demo::make_pools(spec);
  EXPECT_EQ(ids(a.train), ids(b.train));
  EXPECT_EQ(ids(a.heldout), ids(b.heldout));
  const auto train = ids(a.train), heldout = ids(a.heldout);
  for (const auto& id : heldout) EXPECT_FALSE(train.count(id)) << id << " is in both splits";
  // 90*90 additions + 90*91/2 subtractions with a non-negative answer.
  EXPECT_EQ(train.size() + heldout.size(), 8100u + 4095u);
  const double fraction = static_cast<double>(heldout.size()) / (train.size() + heldout.size());
  EXPECT_NEAR(fraction, 0.2, 0.02);
  // Another seed moves problems between the splits.
  EXPECT_NE(ids(demo::make_pools({8, 0.2}).heldout), heldout);
}

TEST(DemoTasks, SamplingIsSeededAndDistinct) {
  const auto pools = demo::make_pools({0, 0.2});
  const auto x = demo::sample_problems(pools.train, 300, 3);
  const auto y = demo::sample_problems(pools.train, 300, 3);
  ASSERT_EQ(x.size(), 300u);
  EXPECT_EQ(ids(x), ids(y));
  EXPECT_EQ(ids(x).size(), 300u);
  EXPECT_NE(ids(x), ids(demo::sample_problems(pools.train, 300, 4)));
  EXPECT_THROW(demo::sample_problems(pools.heldout, pools.heldout.size() + 1, 0), std::invalid_argument);
  EXPECT_THROW(demo::make_pools({0, 1.0}), std::invalid_argument);
}

TEST(DemoTasks, EveryReferenceAnswerIsAcceptedByTheRealMathGraderAndMistakesAreNot) {
  const auto pools = demo::make_pools({0, 0.2});
  const auto& registry = distil::graders::Registry::builtin();
  distil::graders::GradeContext context;
  std::mt19937_64 rng(1);
  std::size_t checked = 0;
  for (const auto* pool : {&pools.train, &pools.heldout}) {
    for (std::size_t i = 0; i < pool->size(); i += 7) {  // a spread-out seventh of each pool
      const demo::Problem& p = (*pool)[i];
      // The record round-trips through the real validator.
      const distil::tasks::Task task = distil::tasks::task_from_json(distil::tasks::to_json(demo::to_task(p)));
      ASSERT_EQ(task.domain, "math");
      const auto right = distil::graders::grade(registry, task, demo::boxed_response(p.answer()), {}, context);
      EXPECT_TRUE(right.passed) << p.id() << ": " << right.verdict << " " << right.feedback;
      const int wrong_value = demo::plausible_wrong_answer(p, rng);
      EXPECT_NE(wrong_value, p.answer());
      EXPECT_GE(wrong_value, 0);
      const auto wrong = distil::graders::grade(registry, task, demo::boxed_response(wrong_value), {}, context);
      EXPECT_FALSE(wrong.passed) << p.id() << " accepted " << wrong_value;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1700u);
}

TEST(DemoCorpus, TeacherExamplesUseTheTrainerTemplatesAndAreCorrect) {
  const auto formats = default_formats();
  const auto pools = demo::make_pools({0, 0.2});
  const demo::CorpusSampler sampler(demo::PretrainRecipe{}, formats, pools.train);
  std::mt19937_64 rng(0);
  const demo::Problem& p = pools.train.front();
  const auto solution = sampler.make(p, "solution", rng);
  EXPECT_TRUE(solution.correct);
  EXPECT_EQ(solution.response, demo::boxed_response(p.answer()));
  EXPECT_NE(solution.user_message.find("Correct solution:\n\n" + demo::boxed_response(p.answer())), std::string::npos)
      << solution.user_message;
  EXPECT_EQ(solution.user_message.rfind(p.prompt(), 0), 0u);
  const auto reference = sampler.make(p, "reference", rng);
  EXPECT_NE(reference.user_message.find("Reference solution:"), std::string::npos) << reference.user_message;
  EXPECT_THROW(sampler.make(p, "bogus", rng), std::invalid_argument);
}

// A passed rollout with no passed sibling, under teacher.passed_without_sibling: own_response:
// its own answer as the solution (never "Correct." as feedback on an unsuccessful attempt); the
// corpus answer keeps the answer.
TEST(DemoCorpus, FeedbackOnACorrectAnswerKeepsTheAnswer) {
  const auto formats = default_formats();
  const auto pools = demo::make_pools({0, 0.2});
  demo::PretrainRecipe only;
  only.mix_student = only.mix_solution = only.mix_reference = only.mix_feedback = 0.0;
  only.mix_feedback_correct = 1.0;
  const demo::CorpusSampler sampler(only, formats, pools.train);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20; ++i) {
    const auto e = sampler.next(rng);
    ASSERT_EQ(e.kind, "feedback_correct");
    EXPECT_TRUE(e.correct);
    const std::size_t q = e.user_message.find("? Answer in \\boxed{}.");
    ASSERT_NE(q, std::string::npos) << e.user_message;
    // The problem is the one the response answers (left and right operand parsed from the prompt).
    const std::string prompt = e.user_message.substr(0, q + 1);
    int left = 0, right = 0;
    char op = 0;
    ASSERT_EQ(std::sscanf(prompt.c_str(), "What is %d %c %d?", &left, &op, &right), 3) << prompt;
    const demo::Problem p{op == '+' ? demo::Operation::add : demo::Operation::subtract, left, right};
    EXPECT_EQ(e.response, demo::boxed_response(p.answer()));
    const std::string feedback = demo::grader_feedback(p, e.response);
    EXPECT_EQ(feedback, "Correct.");  // the real math grader's text for a boxed right answer
    auto own = formats.teacher;
    own.passed_without_sibling = "own_response";
    const auto expected =
        distil::trainer::teacher_message(own, "feedback", p.prompt(), {{true, e.response, feedback}}, 0, std::nullopt);
    ASSERT_TRUE(expected.has_value());
    EXPECT_EQ(e.user_message, *expected);
    EXPECT_EQ(e.user_message.find("unsuccessful"), std::string::npos) << e.user_message;
  }
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"mix_feedback_correct", -1.0}}), std::invalid_argument);
}

TEST(DemoRecipe, RejectsBadKeysAndValues) {
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"stepz", 3}}), std::invalid_argument);
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"steps", "many"}}), std::invalid_argument);
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"add_correct", 1.5}}), std::invalid_argument);
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"hidden_size", 100}, {"num_heads", 3}}), std::invalid_argument);
  EXPECT_EQ(demo::PretrainRecipe::from_json({{"steps", 3}}).steps, 3);
  const auto formats = default_formats();
  EXPECT_NE(demo::recipe_hash(demo::PretrainRecipe{}, formats),
            demo::recipe_hash(demo::PretrainRecipe::from_json({{"steps", 3}}), formats));
}

TEST(DemoPretrain, ATinyRunLowersTheHeldOutLoss) {
  demo::PretrainRecipe recipe;
  recipe.hidden_size = 32;
  recipe.num_layers = 1;
  recipe.num_heads = 2;
  recipe.num_kv_heads = 1;
  recipe.intermediate_size = 64;
  recipe.bpe_merges = 40;
  recipe.steps = 30;
  recipe.batch_size = 16;
  recipe.warmup_steps = 5;
  const auto dir = std::filesystem::temp_directory_path() / ("distil-demo-test-" + std::to_string(::getpid()));
  const auto run = demo::run_pretraining(recipe, default_formats(), dir / "tokenizer", {});
  std::filesystem::remove_all(dir);
  EXPECT_LT(run.final_loss, run.initial_loss * 0.8) << "before " << run.initial_loss << " after " << run.final_loss;
}

// --- the code domain -----------------------------------------------------------------------------

namespace {

std::set<std::string> rule_ids(const std::vector<demo::CodeTask>& tasks) {
  std::set<std::string> out;
  for (const auto& t : tasks) out.insert(t.id().substr(0, t.id().rfind('-')));
  return out;
}

}  // namespace

TEST(DemoCodeTasks, PoolsAreDeterministicAndHeldOutRulesAreNeverTrainedOn) {
  const demo::CodeSplitSpec spec{3, 0.2, 5};
  const auto a = demo::make_code_pools(spec);
  const auto b = demo::make_code_pools(spec);
  ASSERT_EQ(a.train.size(), b.train.size());
  for (std::size_t i = 0; i < a.train.size(); ++i) EXPECT_EQ(a.train[i].id(), b.train[i].id());
  const auto train = rule_ids(a.train), heldout = rule_ids(a.heldout);
  EXPECT_EQ(train.size() + heldout.size(), demo::all_word_rules().size());
  for (const auto& r : heldout) EXPECT_EQ(train.count(r), 0u) << r;
  EXPECT_FALSE(heldout.empty());
  EXPECT_EQ(a.train.size() + a.heldout.size(), 5 * demo::all_word_rules().size());
  EXPECT_NE(rule_ids(demo::make_code_pools({4, 0.2, 5}).heldout), heldout) << "the split seed must matter";
  EXPECT_THROW(demo::make_code_pools({0, 1.0, 5}), std::invalid_argument);
  EXPECT_THROW(demo::make_code_pools({0, 0.2, 0}), std::invalid_argument);
}

// The reference program passes every test and every plausible mistake fails one, judged by the
// real code grader running real Python in the real sandbox; the failure's feedback shows what a
// teacher needs (the failing input and expected output, or the traceback) and is informative.
TEST(DemoCodeTasks, ReferencePassesAndMistakesFailInTheRealSandbox) {
  const auto pools = demo::make_code_pools({0, 0.2, 2});
  std::mt19937_64 rng(11);
  std::vector<const demo::CodeTask*> owners;
  std::vector<std::string> programs;
  std::vector<bool> should_pass;
  for (std::size_t i = 0; i < pools.train.size(); i += 9) {
    const auto& task = pools.train[i];
    owners.push_back(&task), programs.push_back(demo::word_program(task.rule)), should_pass.push_back(true);
    const auto wrong = demo::plausible_wrong_program(task, rng);
    owners.push_back(&task), programs.push_back(demo::word_program(wrong.rule, wrong.bug)), should_pass.push_back(false);
  }
  std::vector<distil::graders::GradeResult> results;
  try {
    results = demo::grade_code_responses(owners, programs);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "the sandbox cannot run programs here: " << e.what();
  }
  if (results.front().verdict == "sandbox_error") GTEST_SKIP() << "sandbox unavailable: " << results.front().feedback;
  for (std::size_t i = 0; i < results.size(); ++i) {
    SCOPED_TRACE(owners[i]->id() + "\n" + programs[i]);
    EXPECT_EQ(results[i].passed, should_pass[i]) << results[i].verdict << ": " << results[i].feedback;
    if (!should_pass[i]) {
      EXPECT_TRUE(results[i].informative);
      const bool shows_test = results[i].feedback.find("Expected:") != std::string::npos;
      const bool shows_error = results[i].feedback.find("Error") != std::string::npos;
      EXPECT_TRUE(shows_test || shows_error) << results[i].feedback;
    }
  }
}

TEST(DemoCodeTasks, ProgramsAreLongEnoughThatEarlyTokensDecideLaterOnes) {
  const auto pools = demo::make_code_pools({0, 0.2, 1});
  for (const auto& task : pools.train) {
    const auto p = demo::word_program(task.rule);
    EXPECT_GE(p.size(), 60u) << p;
    EXPECT_EQ(task.to_task().tests.size(), 3u);
  }
}

TEST(DemoCodeCorpus, FeedbackExamplesCarryTheRealGradersFeedbackAndNoReference) {
  const auto formats = default_formats();
  const auto pools = demo::make_code_pools({0, 0.2, 2});
  demo::PretrainRecipe only;
  only.domain = "code";
  only.mix_student = only.mix_solution = only.mix_reference = only.mix_feedback_correct = 0.0;
  only.mix_feedback = 1.0;
  const demo::CodeCorpusSampler sampler(only, formats, pools.train, /*feedback_bank=*/8);
  std::mt19937_64 rng(5);
  try {
    for (int i = 0; i < 6; ++i) {
      const auto e = sampler.next(rng);
      ASSERT_EQ(e.kind, "feedback");
      EXPECT_NE(e.user_message.find("feedback from your unsuccessful earlier attempt"), std::string::npos) << e.user_message;
      EXPECT_EQ(e.user_message.find("Reference solution"), std::string::npos);
      EXPECT_EQ(e.user_message.find("Correct solution"), std::string::npos);
      EXPECT_NE(e.response.find("```python\n"), std::string::npos);
    }
  } catch (const std::exception& e) {
    GTEST_SKIP() << "the sandbox cannot run programs here: " << e.what();
  }
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"domain", "chess"}}), std::invalid_argument);
  EXPECT_THROW(demo::PretrainRecipe::from_json({{"domain", 3}}), std::invalid_argument);
  EXPECT_EQ(demo::PretrainRecipe::from_json({{"domain", "code"}}).domain, "code");
}

// The misconception knob makes the student's *mode* wrong exactly on the documented confusable
// values (capitalize -> upper, dashes -> underscores, colons -> commas, slashes -> dots) and
// leaves every other rule's mode right.
TEST(DemoCodeCorpus, MisconceptionsMakeTheModeWrongOnlyOnConfusableValues) {
  const auto& seps = demo::word_separators();
  auto sep = [&](char c) {
    for (std::size_t i = 0; i < seps.size(); ++i)
      if (seps[i].symbol == c) return static_cast<int>(i);
    return -1;
  };
  int confusable_rules = 0;
  for (const auto& rule : demo::all_word_rules()) {
    const auto confused = demo::misconceived_rule(rule);
    EXPECT_EQ(confused.order, rule.order);
    EXPECT_EQ(confused.letter_case,
              rule.letter_case == demo::WordCase::capitalize ? demo::WordCase::upper : rule.letter_case);
    const int s = rule.separator;
    const int expected = s == sep('-') ? sep('_') : s == sep(':') ? sep(',') : s == sep('/') ? sep('.') : s;
    EXPECT_EQ(confused.separator, expected);
    confusable_rules += !(confused == rule);
  }
  // 3 x 3 x 8 rules; those without capitalize (2/3) and without a confusable separator (5/8) are clean.
  EXPECT_EQ(confusable_rules, 72 - 3 * 2 * 5);

  const auto pools = demo::make_code_pools({0, 0.2, 1});
  for (const auto& task : pools.train) {
    std::map<std::string, int> counts;
    std::mt19937_64 rng(3);
    for (int i = 0; i < 400; ++i) ++counts[demo::sample_student_program(task, 0.85, 0.1, 0.8, rng)];
    const auto mode = std::max_element(counts.begin(), counts.end(),
                                       [](const auto& a, const auto& b) { return a.second < b.second; })->first;
    const auto confused = demo::misconceived_rule(task.rule);
    SCOPED_TRACE(task.id());
    EXPECT_EQ(mode, demo::word_program(confused)) << "the mode is the look-alike (or the right program when none)";
    if (!(confused == task.rule)) {
      EXPECT_GT(counts[demo::word_program(task.rule)], 0) << "the right program is still sampled sometimes";
    }
  }
}
