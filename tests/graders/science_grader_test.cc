#include <gtest/gtest.h>

#include "graders/grader.h"

using namespace distil;

namespace {

graders::GradeResult grade(const nlohmann::json& task_json, const std::string& response,
                           graders::GradeOptions options = {}) {
  tasks::Task task = tasks::task_from_json(task_json);
  graders::GradeContext context;
  return graders::grade(graders::Registry::builtin(), task, response, options, context);
}

nlohmann::json mc(const std::string& answer = "B") {
  return {{"id", "mc"}, {"domain", "science"}, {"prompt", "Which?"}, {"answer", answer},
          {"choices", {"1 J", "2 J", "3 J", "4 J"}}};
}

}  // namespace

TEST(ScienceGrader, MultipleChoiceForms) {
  for (const std::string response :
       {"<answer>B</answer>", "Answer: B", "answer: (b)", "The answer is (B).", "B", "b",
        "Thinking...\nThe correct option is (B)", "\\boxed{B}", "**Answer:** B) 2 J", "A is wrong, so B",
        "Option A fails because of friction. Option C double counts. So B.", "Answer: 2 J",
        "<think>maybe A? or C</think>The answer is B", "<answer> option b </answer>",
        "The answer is A. Actually no, it is B.", "Answer: A is wrong, so B", "Answer: B (not A)",
        "Answer: A is not correct; B is."}) {
    auto r = grade(mc(), response);
    EXPECT_TRUE(r.passed) << response << " -> " << r.extracted;
    EXPECT_EQ(r.extracted, "B") << response;
    EXPECT_EQ(r.verdict, "accepted");
    EXPECT_EQ(r.reward, 1.0);
  }
  for (const std::string response : {"Answer: A", "B is wrong, so A", "<answer>C</answer>", "The answer is (D)."}) {
    auto r = grade(mc(), response);
    EXPECT_FALSE(r.passed) << response;
    EXPECT_EQ(r.verdict, "wrong_answer");
    EXPECT_EQ(r.reward, 0.0);
  }
}

TEST(ScienceGrader, ReferenceMayBeTheChoiceText) {
  EXPECT_TRUE(grade(mc("3 J"), "Answer: C").passed);
  EXPECT_FALSE(grade(mc("3 J"), "Answer: B").passed);
}

TEST(ScienceGrader, FormatErrors) {
  auto r = grade(mc(), "");
  EXPECT_EQ(r.verdict, "format_error");
  r = grade(mc(), "<think>Option B seems right but let me check");
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("<think>"), std::string::npos);
  r = grade(mc(), "I do not know.");
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("Answer: B"), std::string::npos);
}

TEST(ScienceGrader, RevealAnswerIsOffByDefault) {
  auto r = grade(mc(), "Answer: A");
  EXPECT_EQ(r.feedback.find("correct answer is B"), std::string::npos);
  graders::GradeOptions options;
  options.reveal_answer = true;
  r = grade(mc(), "Answer: A", options);
  EXPECT_NE(r.feedback.find("correct answer is B"), std::string::npos);
}

TEST(ScienceGrader, TrueFalseAndYesNo) {
  nlohmann::json t = {{"id", "tf"}, {"domain", "science"}, {"prompt", "p"}, {"answer", "True"}};
  EXPECT_TRUE(grade(t, "It is not false: the statement is true.").passed);
  EXPECT_TRUE(grade(t, "Answer: yes").passed);
  EXPECT_FALSE(grade(t, "Answer: False").passed);
  t["answer"] = "No";
  EXPECT_TRUE(grade(t, "After checking, no.").passed);
  EXPECT_FALSE(grade(t, "<answer>Yes</answer>").passed);
}

TEST(ScienceGrader, NumericWithToleranceAndUnits) {
  nlohmann::json t = {{"id", "n"}, {"domain", "science"}, {"prompt", "p"}, {"answer", "9.81 m/s^2"}};
  EXPECT_TRUE(grade(t, "Answer: 9.8 m/s^2").passed);
  EXPECT_FALSE(grade(t, "Answer: 9.0 m/s^2").passed);
  t["answer"] = "1500 m";
  EXPECT_TRUE(grade(t, "Answer: 1.5 km").passed);
  EXPECT_FALSE(grade(t, "Answer: 1.5 m").passed);
  t["answer"] = "6.02e23";
  EXPECT_TRUE(grade(t, "Answer: $6.022 \\times 10^{23}$").passed);
  EXPECT_TRUE(grade(t, "so about 6.0 x 10^23 molecules").passed);
  t["answer"] = "-40";
  EXPECT_TRUE(grade(t, "The temperatures meet at -40 degrees.").passed);
}

TEST(ScienceGrader, NormalisedText) {
  nlohmann::json t = {{"id", "x"}, {"domain", "science"}, {"prompt", "p"}, {"answer", "Mitochondria"}};
  EXPECT_TRUE(grade(t, "Answer: the mitochondria.").passed);
  EXPECT_FALSE(grade(t, "Answer: ribosome").passed);
}

TEST(ScienceGrader, BadReferenceIsATaskError) {
  EXPECT_THROW(grade(mc("Z something"), "Answer: A"), tasks::TaskError);
}

TEST(ScienceGrader, HostileResponsesDoNotThrow) {
  std::string big(1 << 20, 'A');
  EXPECT_NO_THROW(grade(mc(), big));
  EXPECT_NO_THROW(grade(mc(), std::string("\0\xff\xfe<answer>", 12)));
  EXPECT_NO_THROW(grade(mc(), "\\boxed{\\boxed{\\boxed{"));
}

TEST(ScienceGrader, LongNumericResponseIsLinear) {
  nlohmann::json t = {{"id", "n"}, {"domain", "science"}, {"prompt", "p"}, {"answer", "7"}};
  std::string big;
  for (int i = 0; i < 200000; ++i) big += "1 ";
  big += "7";
  EXPECT_TRUE(grade(t, big).passed);
}
