// The code grader against the real sandbox (real Python and g++ runs), plus the comparison rules.
#include <memory>

#include <gtest/gtest.h>

#include "graders/code_support.h"
#include "graders/grader.h"
#include "tests/graders/shared_sandbox.h"

using namespace distil;
using distil::test::shared_sandbox;

namespace {

tasks::Task stdin_task() {
  return tasks::task_from_json({{"id", "sum"},
                                {"domain", "code"},
                                {"prompt", "Read two integers and print their sum."},
                                {"tests",
                                 {{{"input", "1 2\n"}, {"output", "3\n"}},
                                  {{"input", "10 -4\n"}, {"output", "6"}},
                                  {{"input", "100 200\n"}, {"output", "300\n"}}}}});
}

tasks::Task functional_task() {
  return tasks::task_from_json({{"id", "twosum"},
                                {"domain", "code"},
                                {"prompt", "two sum"},
                                {"tests",
                                 {{{"input", "[2,7,11,15]\n9"}, {"output", "[0, 1]"}, {"type", "functional"}},
                                  {{"input", "[3,2,4]\n6"}, {"output", "[1, 2]"}, {"type", "functional"}}}},
                                {"metadata", {{"func_name", "twoSum"}}}});
}

graders::GradeResult grade(const tasks::Task& task, const std::string& response, graders::GradeOptions options = {}) {
  graders::GradeContext context{shared_sandbox(nullptr)};
  return graders::grade(graders::Registry::builtin(), task, response, options, context);
}

std::string py(const std::string& code) { return "Here is my solution.\n```python\n" + code + "\n```\n"; }

}  // namespace

TEST(CodeComparison, LiveCodeBenchStdinRules) {
  using graders::code::stdin_outputs_match;
  EXPECT_TRUE(stdin_outputs_match("3\n", "3"));
  EXPECT_TRUE(stdin_outputs_match("  1 2  \n3\n\n", "1 2\n3"));
  EXPECT_TRUE(stdin_outputs_match("1.0 2.50\n", "1 2.5"));
  EXPECT_TRUE(stdin_outputs_match("1e3\n", "1000"));
  EXPECT_FALSE(stdin_outputs_match("1.0000001\n", "1"));
  EXPECT_FALSE(stdin_outputs_match("1 2", "1  2 3"));
  EXPECT_FALSE(stdin_outputs_match("1\n2", "1 2"));
  EXPECT_FALSE(stdin_outputs_match("YES", "yes"));
  EXPECT_FALSE(stdin_outputs_match("nan", "nan1"));
  EXPECT_TRUE(stdin_outputs_match("-0", "0"));
}

// Functional results are compared with Python's == semantics: tests/graders/code_lcb_test.cc
// (CodeValues.*, CodeLcb.FunctionalComparisonIsPythonEquality).

TEST(CodeComparison, LastCodeBlock) {
  using graders::code::last_code_block;
  auto b = last_code_block("a\n```python\nprint(1)\n```\ntext\n```cpp\nint main(){}\n```\n");
  EXPECT_TRUE(b.found);
  EXPECT_EQ(b.language, "cpp");
  EXPECT_EQ(b.code, "int main(){}\n");
  b = last_code_block("```\nprint(2)\n```");
  EXPECT_EQ(b.code, "print(2)\n");
  b = last_code_block("```python\nprint(3)\n");
  EXPECT_FALSE(b.found);
  EXPECT_TRUE(b.unterminated);
  EXPECT_FALSE(last_code_block("no code here").found);
}

TEST(CodeGrader, AcceptsACorrectStdinProgram) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(), py("a, b = map(int, input().split())\nprint(a + b)"));
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(r.reward, 1.0);
  EXPECT_EQ(r.details["tests_passed"], 3);
  EXPECT_EQ(r.details["fraction_passed"], 1.0);
  EXPECT_FALSE(r.informative) << "an accepted program's feedback only restates the verdict";
}

TEST(CodeGrader, WrongAnswerFeedbackLikeLeetCode) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(), py("import sys\na, b = map(int, input().split())\nprint('dbg', file=sys.stderr)\nprint(a + b if a < 5 else a * b)"));
  EXPECT_EQ(r.verdict, "wrong_answer");
  EXPECT_EQ(r.reward, 0.0);
  EXPECT_NE(r.feedback.find("Test Case 2: Wrong Answer"), std::string::npos) << r.feedback;
  EXPECT_NE(r.feedback.find("Input:\n10 -4"), std::string::npos) << r.feedback;
  EXPECT_NE(r.feedback.find("Output:\n-40"), std::string::npos) << r.feedback;
  EXPECT_NE(r.feedback.find("Expected:\n6"), std::string::npos) << r.feedback;
  EXPECT_NE(r.feedback.find("Debug Output:\ndbg"), std::string::npos) << r.feedback;
  EXPECT_EQ(r.details["tests_passed"], 1);
  EXPECT_EQ(r.details["tests_run"], 2) << "stops at the first failure by default";
  EXPECT_TRUE(r.informative) << "the failing test's input, output and expected output";
  graders::GradeOptions all;
  all.run_all_tests = true;
  r = grade(stdin_task(), py("a, b = map(int, input().split())\nprint(a + b if a < 5 else a * b)"), all);
  EXPECT_EQ(r.details["tests_run"], 3);
  EXPECT_NEAR(r.details["fraction_passed"].get<double>(), 1.0 / 3.0, 1e-9);
  EXPECT_NE(r.feedback.find("Test Case 3: Wrong Answer"), std::string::npos) << r.feedback;
}

TEST(CodeGrader, RuntimeErrorShowsTheTraceback) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(), py("a, b = map(int, input().split())\nprint(1 // (a - a))"));
  EXPECT_EQ(r.verdict, "runtime_error");
  EXPECT_NE(r.feedback.find("Test Case 1: Runtime Error"), std::string::npos) << r.feedback;
  EXPECT_NE(r.feedback.find("ZeroDivisionError"), std::string::npos) << r.feedback;
}

TEST(CodeGrader, TimeLimit) {
  REQUIRE_SANDBOX();
  graders::GradeOptions options;
  options.per_test_timeout_s = 0.5;
  auto r = grade(stdin_task(), py("while True:\n    pass"), options);
  EXPECT_EQ(r.verdict, "time_limit");
  EXPECT_NE(r.feedback.find("Time Limit Exceeded"), std::string::npos) << r.feedback;
}

TEST(CodeGrader, FunctionalTests) {
  REQUIRE_SANDBOX();
  const std::string good =
      "class Solution:\n"
      "    def twoSum(self, nums, target):\n"
      "        print('searching')\n"
      "        seen = {}\n"
      "        for i, x in enumerate(nums):\n"
      "            if target - x in seen:\n"
      "                return (seen[target - x], i)\n"
      "            seen[x] = i\n";
  auto r = grade(functional_task(), py(good));
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
  auto bad = grade(functional_task(), py("class Solution:\n    def twoSum(self, nums, target):\n        print('dbg')\n        return [1, 0]\n"));
  EXPECT_EQ(bad.verdict, "wrong_answer");
  EXPECT_NE(bad.feedback.find("Output:\n[1, 0]"), std::string::npos) << bad.feedback;
  EXPECT_NE(bad.feedback.find("Debug Output:\ndbg"), std::string::npos) << bad.feedback;
}

TEST(CodeGrader, CppSolutions) {
  REQUIRE_SANDBOX();
  auto r = grade(stdin_task(), "```cpp\n#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<\"\\n\";}\n```");
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
  r = grade(stdin_task(), "```cpp\nint main( {\n```");
  EXPECT_EQ(r.verdict, "compile_error") << r.feedback;
  EXPECT_NE(r.feedback.find("Compile Error"), std::string::npos);
}

TEST(CodeGrader, FormatErrors) {
  // Needs no sandbox: the response is rejected before anything runs.
  graders::GradeContext context;
  auto r = graders::grade(graders::Registry::builtin(), stdin_task(), "I would add them.", {}, context);
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("No code block"), std::string::npos);
  r = graders::grade(graders::Registry::builtin(), stdin_task(), "```python\nprint(", {}, context);
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("cut off"), std::string::npos);
}

TEST(CodeGrader, NoSandboxIsASandboxErrorNotACrash) {
  graders::GradeContext context;
  auto r = graders::grade(graders::Registry::builtin(), stdin_task(), py("print(3)"), {}, context);
  EXPECT_EQ(r.verdict, "sandbox_error");
  EXPECT_EQ(r.reward, 0.0);
}

TEST(CodeGrader, FeedbackIsBounded) {
  REQUIRE_SANDBOX();
  graders::GradeOptions options;
  options.run_all_tests = true;
  auto r = grade(stdin_task(), py("print('x' * 100000)"), options);
  EXPECT_LE(r.feedback.size(), options.max_feedback_chars);
  EXPECT_EQ(r.feedback.find("Test Case 3"), std::string::npos) << "at most 2 failing tests are described";
}
