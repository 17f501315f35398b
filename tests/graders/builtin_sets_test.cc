// The built-in task sets load, validate, and are gradeable: every math/science reference answer
// is accepted as a response, and every code task's reference solution passes all its tests in
// the real sandbox.
#include <memory>
#include <set>

#include <gtest/gtest.h>

#include "graders/grader.h"

using namespace distil;

namespace {

tasks::LoadResult load(const std::string& name) {
  return tasks::load_jsonl(std::string(DISTIL_SOURCE_DIR) + "/tasks/data/" + name + ".jsonl");
}

graders::GradeResult grade(const tasks::Task& task, const std::string& response, sandbox::Sandbox* box = nullptr) {
  graders::GradeContext context{box};
  return graders::grade(graders::Registry::builtin(), task, response, {}, context);
}

}  // namespace

TEST(BuiltinTaskSets, LoadAndValidate) {
  for (const std::string name : {"code", "math", "science"}) {
    auto result = load(name);  // throws on any invalid line
    EXPECT_GE(result.tasks.size(), 24u) << name;
    std::set<std::string> ids;
    for (const auto& t : result.tasks) {
      EXPECT_EQ(t.domain, name) << t.id;
      EXPECT_TRUE(ids.insert(t.id).second) << "duplicate id " << t.id;
      EXPECT_EQ(t.id.rfind(name + "/", 0), 0u) << t.id;
    }
  }
}

TEST(BuiltinTaskSets, MathReferenceAnswersGradeAsCorrect) {
  for (const auto& t : load("math").tasks) {
    auto right = grade(t, "Working...\nThe answer is $\\boxed{" + *t.answer + "}$.");
    EXPECT_TRUE(right.passed) << t.id << ": " << right.feedback;
    EXPECT_TRUE(right.details["reference_parsed"].get<bool>()) << t.id << " reference should parse as math";
    auto wrong = grade(t, "The answer is $\\boxed{\\frac{123456}{7}}$.");
    EXPECT_FALSE(wrong.passed) << t.id;
  }
}

TEST(BuiltinTaskSets, ScienceReferenceAnswersGradeAsCorrect) {
  for (const auto& t : load("science").tasks) {
    auto right = grade(t, "Let me think.\nAnswer: " + *t.answer);
    EXPECT_TRUE(right.passed) << t.id << ": " << right.feedback;
    if (!t.choices.empty()) {
      const char other = (*t.answer)[0] == 'A' ? 'B' : 'A';
      EXPECT_FALSE(grade(t, std::string("Answer: ") + other).passed) << t.id;
    }
  }
}

TEST(BuiltinTaskSets, CodeReferenceSolutionsPassInTheSandbox) {
  std::unique_ptr<sandbox::Sandbox> box;
  try {
    box = std::make_unique<sandbox::Sandbox>();
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no sandbox on this host: " << e.what();
  }
  for (const auto& t : load("code").tasks) {
    ASSERT_TRUE(t.metadata.contains("reference_solution")) << t.id;
    const std::string solution = t.metadata["reference_solution"].get<std::string>();
    // functional solutions keep LeetCode's unimported List[int] annotations: the harness provides typing
    auto r = grade(t, "```python\n" + solution + "\n```", box.get());
    EXPECT_EQ(r.verdict, "accepted") << t.id << ": " << r.feedback;
    // and a program that prints nothing fails every one of them
    auto empty = grade(t, "```python\npass\n```", box.get());
    EXPECT_FALSE(empty.passed) << t.id;
  }
}
