// Teacher context construction and the validation of a remote teacher's reply.
#include <gtest/gtest.h>

#include "trainer/config.h"
#include "trainer/teacher.h"

namespace distil::trainer {
namespace {

TEST(StripReasoning, RemovesThinkBlocksAndUnclosedTails) {
  EXPECT_EQ(strip_reasoning("<think>hmm</think>\n\nThe answer is 4."), "The answer is 4.");
  EXPECT_EQ(strip_reasoning("a<think>x</think>b<think>y</think>c"), "abc");
  EXPECT_EQ(strip_reasoning("start <think>never closed"), "start");
}

TEST(FillTemplate, SubstitutedTextIsNotExpandedAgain) {
  EXPECT_EQ(fill_template("{prompt}|{feedback}", {{"prompt", "p {feedback}"}, {"feedback", "F"}}), "p {feedback}|F");
  EXPECT_EQ(fill_template("{unknown}", {{"prompt", "x"}}), "{unknown}");
}

TEST(TeacherMessage, SiblingSolutionThenFeedbackThenMasked) {
  const auto config = load_config_text("").teacher;
  std::vector<RolloutView> group = {{false, "wrong", "no \\boxed{} found"},
                                    {true, "<think>t</think>\\boxed{4}", ""},
                                    {true, "\\boxed{4} again", ""},
                                    {false, "also wrong", ""}};
  auto m0 = teacher_message(config, "feedback", "2+2?", group, 0, std::nullopt);
  ASSERT_TRUE(m0);
  EXPECT_EQ(*m0, "2+2?\nCorrect solution:\n\n\\boxed{4}\n\n\n\nCorrectly solve the original question.");
  // A successful rollout learns from the first *other* success.
  auto m1 = teacher_message(config, "feedback", "2+2?", group, 1, std::nullopt);
  ASSERT_TRUE(m1);
  EXPECT_NE(m1->find("\\boxed{4} again"), std::string::npos);
  // Without any success: the rollout's own feedback, and none -> masked.
  std::vector<RolloutView> failing = {{false, "a", "Runtime Error"}, {false, "b", ""}};
  auto f0 = teacher_message(config, "feedback", "q", failing, 0, std::nullopt);
  ASSERT_TRUE(f0);
  EXPECT_EQ(*f0, "q\nThe following is feedback from your unsuccessful earlier attempt:\n\nRuntime Error\n\n\n\n"
                 "Correctly solve the original question.");
  EXPECT_FALSE(teacher_message(config, "feedback", "q", failing, 1, std::nullopt));
  // Reference mode uses only the reference.
  auto r = teacher_message(config, "reference", "q", failing, 1, std::string("ref"));
  ASSERT_TRUE(r);
  EXPECT_NE(r->find("Reference solution:\n\nref"), std::string::npos);
  EXPECT_FALSE(teacher_message(config, "reference", "q", failing, 1, std::nullopt));
}

std::string remote_error(const nlohmann::json& reply, std::size_t length = 2, int64_t k = 2) {
  try {
    parse_remote_topk(reply, length, k, 10);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(RemoteTeacher, ReplyIsValidatedFieldByField) {
  nlohmann::json good = {{"topk_ids", {{1, 2}, {3, 4}}}, {"topk_logprobs", {{-0.1, -2.5}, {-0.7, -0.8}}}};
  auto top = parse_remote_topk(good, 2, 2, 10);
  EXPECT_EQ(top.ids[1][0].item<int64_t>(), 3);
  EXPECT_NEAR(top.logp[0][1].item<float>(), -2.5f, 1e-6);
  EXPECT_NE(remote_error({{"topk_ids", {{1, 2}}}, {"topk_logprobs", {{-1, -1}}}}).find("topk_ids: has 1 rows"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", {{1, 2}, {3, 12}}}, {"topk_logprobs", good["topk_logprobs"]}})
                .find("outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", {{1, 1}, {3, 4}}}, {"topk_logprobs", good["topk_logprobs"]}}).find("duplicate"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", good["topk_ids"]}, {"topk_logprobs", {{0.5, -1}, {-1, -1}}}}).find("<= 0"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", good["topk_ids"]}, {"topk_logprobs", {{-0.01, -0.01}, {-1, -1}}}})
                .find("sum to more than 1"),
            std::string::npos);
  EXPECT_NE(remote_error(nlohmann::json::array()).find("<root>"), std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", {{1}, {2}}}, {"topk_logprobs", {{-1}, {-1}}}}).find("expected 2 ids"),
            std::string::npos);
}

}  // namespace
}  // namespace distil::trainer
