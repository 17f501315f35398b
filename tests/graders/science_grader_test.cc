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
  // The empty-response wording is the math grader's too (graders/feedback_text.h).
  EXPECT_EQ(r.feedback.rfind("The response is empty: no final answer was found. End with a line such as \"Answer: B\"", 0),
            0u)
      << r.feedback;
  r = grade(mc(), "<think>Option B seems right but let me check");
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("<think>"), std::string::npos);
  EXPECT_EQ(r.feedback.rfind("The response ended inside its <think> block, so it never stated a final answer. Reason "
                             "more briefly. End with",
                             0),
            0u)
      << r.feedback;
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

// Issue 14: naming several options is a hedge, never a pass, in whatever form it is written.
TEST(ScienceGrader, SeveralOptionsInTheAnswerAreAHedge) {
  for (const std::string response :
       {"<answer>B, C</answer>", "<answer>B,C</answer>", "Answer: B or C", "Answer: (B) and (C)", "\\boxed{B/C}",
        "The answer is B and C.", "<answer>both B and C</answer>", "Answer: B, C are correct", "<answer>C; B</answer>",
        "<answer>b, c</answer>", "Answer: A, B, C and D"}) {
    auto r = grade(mc(), response);
    EXPECT_FALSE(r.passed) << response;
    EXPECT_EQ(r.verdict, "wrong_answer") << response;
    EXPECT_NE(r.feedback.find("more than one option"), std::string::npos) << response << " -> " << r.feedback;
    EXPECT_TRUE(r.informative) << response;
    EXPECT_EQ(r.reward, 0.0);
  }
  // One option, however it is dressed, is not a hedge; the same label twice is one option.
  for (const std::string response : {"<answer>B</answer>", "Answer: B (not A)", "Answer: A is not correct; B is.",
                                     "<answer>B, B</answer>", "Answer: B) 2 J"}) {
    auto r = grade(mc(), response);
    EXPECT_TRUE(r.passed) << response << " -> " << r.feedback;
  }
}

// Issue 14: a yes/no/true/false answer is read with its context, not as its last keyword.
TEST(ScienceGrader, BooleanWordsAreReadInContext) {
  auto yes = [](const std::string& reference) {
    return nlohmann::json{{"id", "b"}, {"domain", "science"}, {"prompt", "?"}, {"answer", reference}};
  };
  struct Case {
    const char* response;
    bool affirmative;
  };
  for (const Case& c : std::vector<Case>{{"Yes, no doubt.", true},
                                         {"Answer: Yes, there is no doubt about it.", true},
                                         {"No question: yes.", true},
                                         {"This is not true.", false},
                                         {"The statement is not entirely true.", false},
                                         {"It isn't true.", false},
                                         {"That is not false.", true},
                                         {"Answer: not true", false},
                                         {"No, it is not true.", false},
                                         {"No.", false},
                                         {"There is no evidence for it, so no.", false},
                                         {"True.", true},
                                         {"<answer>False</answer>", false},
                                         {"Is it false? No, it is true.", true}}) {
    for (const char* reference : {"Yes", "No"}) {
      const bool reference_yes = std::string(reference) == "Yes";
      auto r = grade(yes(reference), c.response);
      EXPECT_EQ(r.passed, c.affirmative == reference_yes) << c.response << " against " << reference << " -> " << r.extracted;
    }
    auto r = grade(yes(c.affirmative ? "True" : "False"), c.response);
    EXPECT_TRUE(r.passed) << c.response << " -> " << r.extracted;
  }
}

// Issue 14: the strict mode is SDPO's multiple-choice reward, exactly: the text between the last
// <answer> and </answer>, whitespace stripped, equal to the letter, case-sensitively; no tag: the
// whole response must be the letter.
TEST(ScienceGrader, StrictModeIsSdposReward) {
  // A reference of SDPO's rule, written independently of the grader, checked on many responses.
  auto sdpo = [](const std::string& response, const std::string& gold) {
    std::string s = response;
    const std::size_t open = s.rfind("<answer>");
    if (open != std::string::npos) s = s.substr(open + 8);
    const std::size_t close = s.find("</answer>");
    if (close != std::string::npos) s = s.substr(0, close);
    const std::size_t b = s.find_first_not_of(" \t\n\r\f\v"), e = s.find_last_not_of(" \t\n\r\f\v");
    s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
    return s == gold;
  };
  const std::vector<std::string> responses = {
      "<answer>B</answer>", "<answer> B </answer>", "<answer>\nB\n</answer>", "B", " B\n", "b", "<answer>b</answer>",
      "Answer: B", "(B)", "\\boxed{B}", "B.", "<answer>(B)</answer>", "<answer>B.</answer>", "<answer>B, C</answer>",
      "<answer>A</answer> then <answer>B</answer>", "<answer>B</answer> then <answer>A</answer>", "<answer>B",
      "<answer>C</answer><answer>B", "<think>x</think><answer>B</answer>", "<think>B</think>", "B</answer>",
      "</answer>B", "<answer></answer>", "", "<answer>2 J</answer>", "The answer is B", "<ANSWER>B</ANSWER>",
      "<answer>B</answer>\n\nLet me double-check: <answer>C</answer>", "<answer>B </answer> extra text"};
  graders::GradeOptions strict;
  strict.science_mode = "strict";
  for (const auto& response : responses) {
    for (const std::string gold : {"A", "B", "C"}) {
      auto r = grade(mc(gold), response, strict);
      EXPECT_EQ(r.passed, sdpo(response, gold)) << "[" << response << "] gold " << gold << " -> " << r.extracted;
      EXPECT_EQ(r.reward, sdpo(response, gold) ? 1.0 : 0.0);
      EXPECT_EQ(r.details["science_mode"], "strict");
    }
  }
  // The reference may be the option's text: the gold is its letter.
  EXPECT_TRUE(grade(mc("2 J"), "<answer>B</answer>", strict).passed);
  // Chosen per task as well; the request's option wins over the task's.
  nlohmann::json task = mc();
  task["metadata"] = {{"science_mode", "strict"}};
  EXPECT_FALSE(grade(task, "Answer: B").passed);
  EXPECT_TRUE(grade(task, "<answer>B</answer>").passed);
  graders::GradeOptions lenient;
  lenient.science_mode = "default";
  EXPECT_TRUE(grade(task, "Answer: B", lenient).passed);
  EXPECT_TRUE(grade(mc(), "Answer: B").passed) << "the default reads the intended letter";
  // No tag and not the bare letter: a format problem the feedback names; a wrong tagged letter is
  // a plain wrong answer.
  auto r = grade(mc(), "I think it is B", strict);
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("<answer>"), std::string::npos);
  r = grade(mc(), "<answer>C</answer>", strict);
  EXPECT_EQ(r.verdict, "wrong_answer");
  EXPECT_FALSE(r.informative);
  // A bad mode is an error naming the field.
  task["metadata"] = {{"science_mode", "loose"}};
  EXPECT_THROW(grade(task, "B"), tasks::TaskError);
  EXPECT_THROW(graders::options_from_json({{"science_mode", "loose"}}), std::invalid_argument);
}
