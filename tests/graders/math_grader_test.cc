#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "graders/grader.h"

using namespace distil;

namespace {

graders::GradeResult grade(const std::string& answer, const std::string& response, graders::GradeOptions options = {}) {
  tasks::Task task = tasks::task_from_json({{"id", "m"}, {"domain", "math"}, {"prompt", "p"}, {"answer", answer}});
  graders::GradeContext context;
  return graders::grade(graders::Registry::builtin(), task, response, options, context);
}

bool accepted(const std::string& answer, const std::string& response) { return grade(answer, response).passed; }

}  // namespace

TEST(MathGrader, Extraction) {
  EXPECT_TRUE(accepted("42", "so we get \\boxed{42}."));
  EXPECT_TRUE(accepted("42", "first \\boxed{41}. That is wrong, so I redo the sum. Now \\boxed{42}"));
  EXPECT_TRUE(accepted("\\frac{1}{2}", "\\boxed{\\frac{1}{\\left(2\\right)}}"));
  EXPECT_TRUE(accepted("\\{1,2\\}", "\\boxed{\\{1, 2\\}}"));
  EXPECT_TRUE(accepted("7", "\\fbox{7}"));
  EXPECT_TRUE(accepted("12", "The final answer is $12$. I hope it is correct."));
  EXPECT_TRUE(accepted("12", "Answer: 12"));
  EXPECT_TRUE(accepted("12", "We add 5 and 7 to get 12"));
  EXPECT_TRUE(accepted("12", "<think>maybe \\boxed{13}</think>The answer is \\boxed{12}"));
  EXPECT_FALSE(accepted("12", "<think>it is \\boxed{12}</think>The answer is \\boxed{13}"));
  // Qwen3's template opens <think> itself: the response starts inside it, and a lone </think>
  // ends the reasoning.
  EXPECT_TRUE(accepted("12", "maybe \\boxed{13}?\n</think>\n\nThe answer is \\boxed{12}"));
  EXPECT_FALSE(accepted("12", "it is \\boxed{12}\n</think>\n\nThe answer is \\boxed{13}"));
  auto r = grade("12", "The answer is \\boxed{12}");
  EXPECT_EQ(r.extracted, "12");
  EXPECT_EQ(r.details["extracted_from"], "boxed");
}

TEST(MathGrader, Normalisation) {
  EXPECT_TRUE(accepted("\\frac{3}{4}", "\\boxed{\\left( \\dfrac{3}{4} \\right)}"));
  EXPECT_TRUE(accepted("\\frac{3}{4}", "\\boxed{\\tfrac34}"));
  EXPECT_TRUE(accepted("\\frac{1}{2}", "\\boxed{\\frac12}"));
  EXPECT_TRUE(accepted("2\\sqrt{3}", "\\boxed{2\\sqrt3}"));
  EXPECT_TRUE(accepted("5", "\\boxed{5 \\text{ cm}}"));
  EXPECT_TRUE(accepted("5", "\\boxed{5\\mathrm{~cm}^2}"));
  EXPECT_TRUE(accepted("90", "\\boxed{90^\\circ}"));
  EXPECT_TRUE(accepted("90", "\\boxed{90°}"));
  EXPECT_TRUE(accepted("25\\%", "\\boxed{25\\%}"));
  EXPECT_TRUE(accepted("25", "\\boxed{25\\%}"));
  EXPECT_TRUE(accepted("1000000", "\\boxed{1,000,000}"));
  EXPECT_TRUE(accepted("1000000", "\\boxed{1{,}000{,}000}"));
  EXPECT_TRUE(accepted("0.5", "\\boxed{.5}"));
  EXPECT_TRUE(accepted("3", "\\boxed{3.0}"));
  EXPECT_TRUE(accepted("3", "\\boxed{x = 3}"));
  EXPECT_TRUE(accepted("1/3", "\\boxed{\\frac{1}{3}}"));
  EXPECT_TRUE(accepted("\\{1, 2\\}", "\\boxed{1 \\text{ and } 2}"));
  EXPECT_TRUE(accepted("\\{1, 2\\}", "\\boxed{2 or 1}"));
}

TEST(MathGrader, Equivalence) {
  EXPECT_TRUE(accepted("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}"));
  EXPECT_TRUE(accepted("\\frac{1}{3}", "\\boxed{0.333333}"));
  EXPECT_FALSE(accepted("\\frac{1}{3}", "\\boxed{0.33}"));
  EXPECT_TRUE(accepted("(x+1)^2", "\\boxed{x^2+2x+1}"));
  EXPECT_TRUE(accepted("\\tan^2 x + 1", "\\boxed{\\sec^2 x}"));
  EXPECT_FALSE(accepted("x^2+1", "\\boxed{x^2-1}"));
  EXPECT_TRUE(accepted("(1, 2)", "\\boxed{(1,2)}"));
  EXPECT_FALSE(accepted("(1, 2)", "\\boxed{(2,1)}"));
  EXPECT_TRUE(accepted("\\{1, 2\\}", "\\boxed{\\{2, 1\\}}"));
  EXPECT_TRUE(accepted("[0, 1)", "\\boxed{[0,1)}"));
  EXPECT_FALSE(accepted("[0, 1)", "\\boxed{[0,1]}"));
  EXPECT_TRUE(accepted("(-\\infty, 2] \\cup (3, \\infty)", "\\boxed{(3,\\infty) \\cup (-\\infty,2]}"));
  EXPECT_TRUE(accepted("\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}", "\\boxed{\\begin{bmatrix}1 & 2\\\\3 & 4\\end{bmatrix}}"));
  EXPECT_FALSE(accepted("\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}", "\\boxed{\\begin{pmatrix}1 & 2\\\\4 & 3\\end{pmatrix}}"));
  EXPECT_TRUE(accepted("y = 2x + 1", "\\boxed{2x - y + 1 = 0}"));
  EXPECT_TRUE(accepted("x \\geq 3", "\\boxed{3 \\le x}"));
  EXPECT_FALSE(accepted("x \\geq 3", "\\boxed{x > 3}"));
  EXPECT_TRUE(accepted("1 \\pm \\sqrt{2}", "\\boxed{1-\\sqrt2, 1+\\sqrt2}"));
  EXPECT_TRUE(accepted("\\pi", "\\boxed{\\pi}"));
  EXPECT_FALSE(accepted("\\pi", "\\boxed{3.14}"));
  EXPECT_TRUE(accepted("e^{2}", "\\boxed{\\exp(2)}"));
  EXPECT_TRUE(accepted("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}"));
  EXPECT_TRUE(accepted("\\binom{5}{2}", "\\boxed{10}"));
  EXPECT_TRUE(accepted("5!", "\\boxed{120}"));
  EXPECT_TRUE(accepted("\\sum_{k=1}^{n} a_k b_k", "\\boxed{\\sum_{k=1}^{n} b_k a_k}"));
  EXPECT_FALSE(accepted("\\sum_{k=1}^{n} a_k b_k", "\\boxed{\\sum_{k=0}^{n} a_k b_k}"));
  EXPECT_TRUE(accepted("14916", "the final answer is $14 {, }916$"));
  EXPECT_TRUE(accepted("\\frac{14}{3}", "\\boxed{4\\frac{2}{3}}"));
  EXPECT_TRUE(accepted("-\\frac{14}{3}", "\\boxed{-4\\frac{2}{3}}"));
  EXPECT_TRUE(accepted("\\frac{8}{3}", "\\boxed{4\\frac{2}{3}x}") == false);
  EXPECT_TRUE(accepted("\\frac{2\\pi}{3}", "\\boxed{2\\frac{\\pi}{3}}"));
}

// The letter i is the imaginary unit when the other side holds the unit (\sqrt{-1} evaluates to
// it), and stays a plain symbol otherwise.
TEST(MathGrader, ImaginaryUnitAgainstTheLetterI) {
  EXPECT_TRUE(accepted("i", "\\boxed{\\sqrt{-1}}"));
  EXPECT_TRUE(accepted("\\sqrt{-1}", "\\boxed{i}"));
  EXPECT_TRUE(accepted("3+2i", "\\boxed{3+2\\sqrt{-1}}"));
  EXPECT_TRUE(accepted("2i", "\\boxed{\\sqrt{-4}}"));
  EXPECT_FALSE(accepted("i", "\\boxed{-\\sqrt{-1}}"));
  EXPECT_FALSE(accepted("3+2i", "\\boxed{3-2\\sqrt{-1}}"));
  EXPECT_FALSE(accepted("i", "\\boxed{1}"));
  EXPECT_TRUE(accepted("i+1", "\\boxed{1+i}"));
  EXPECT_FALSE(accepted("i^2", "\\boxed{-1}"));  // neither side holds the unit: i is a symbol
}

TEST(MathGrader, FloatPlacesOption) {
  graders::GradeOptions options;
  options.float_places = 2;
  EXPECT_TRUE(grade("\\frac{1}{3}", "\\boxed{0.33}", options).passed);
  options.float_places = 4;
  EXPECT_FALSE(grade("\\frac{1}{3}", "\\boxed{0.33}", options).passed);
}

TEST(MathGrader, FeedbackAndFormatErrors) {
  auto r = grade("12", "");
  EXPECT_EQ(r.verdict, "format_error");
  // The empty-response wording is the science grader's too (graders/feedback_text.h).
  EXPECT_EQ(r.feedback, "The response is empty: no final answer was found. Put the final answer in \\boxed{}.");
  r = grade("12", "<think>Let me compute 3 times 4, which is");
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("<think>"), std::string::npos);
  EXPECT_EQ(r.feedback, "The response ended inside its <think> block, so it never stated a final answer. Reason "
                        "more briefly. Put the final answer in \\boxed{}.");
  r = grade("12", "I am not sure.");
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("\\boxed"), std::string::npos);
  r = grade("12", "Adding 3 and 4 gives the total \\boxed{\\frac{12}{1");
  EXPECT_EQ(r.verdict, "format_error");
  EXPECT_NE(r.feedback.find("cut off inside \\boxed"), std::string::npos) << r.feedback;
  EXPECT_TRUE(r.details["truncated"].get<bool>());
  r = grade("12", "So it is 13");
  EXPECT_EQ(r.verdict, "wrong_answer");
  EXPECT_NE(r.feedback.find("No \\boxed{}"), std::string::npos);
  EXPECT_EQ(r.feedback.find("12"), std::string::npos) << "the answer must not leak by default: " << r.feedback;
  graders::GradeOptions reveal;
  reveal.reveal_answer = true;
  r = grade("12", "\\boxed{13}", reveal);
  EXPECT_NE(r.feedback.find("correct answer is 12"), std::string::npos);
  r = grade("12", "\\boxed{12}");
  EXPECT_EQ(r.verdict, "accepted");
  EXPECT_EQ(r.reward, 1.0);
}

TEST(MathGrader, HostileInputIsBoundedAndNeverThrows) {
  const std::vector<std::string> hostile = {
      "\\boxed{2^{2^{2^{2^{2^{99999999}}}}}}",
      "\\boxed{((2^{4096})^{4096})^{4096}}",
      "\\boxed{\\exp(10^{4000})}",
      "\\boxed{\\sin(10^{4000})}",
      "\\boxed{(x+1)^{100000}}",
      "\\boxed{99999999!}",
      "\\boxed{" + std::string(5000, '{') + "1" + std::string(5000, '}') + "}",
      "\\boxed{" + std::string(100000, '(') + "}",
      "\\boxed{\\frac{1}{0}}",
      "\\boxed{\\sqrt[0]{2}}",
      "\\boxed{\\begin{pmatrix}" + std::string(3000, '&') + "\\end{pmatrix}}",
      "\\boxed{" + [] {
        std::string s;
        for (int i = 0; i < 500; ++i) s += "\\pm 1";
        return s;
      }() + "}",
      std::string(200000, '1') + " 7",
      std::string("\\boxed{\0\xff\xfe}", 12),
      "$$" + std::string(100000, 'x') + "$$",
  };
  for (const auto& response : hostile) {
    const auto start = std::chrono::steady_clock::now();
    graders::GradeResult r;
    EXPECT_NO_THROW(r = grade("(x+1)^2", response)) << response.substr(0, 60);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Not a timing assertion on normal work: a hostile answer must not hang a worker.
    EXPECT_LT(seconds, 10.0) << response.substr(0, 60);
  }
}

TEST(MathGrader, OverflowIsNotEquality) {
  EXPECT_FALSE(accepted("1", "\\boxed{\\exp(10^{4000})}"));
  EXPECT_FALSE(accepted("\\exp(10^{4000})", "\\boxed{\\exp(10^{4000}) + 1}"));
}

TEST(MathGrader, ConcurrentGradingIsSafe) {
  std::vector<std::thread> threads;
  std::atomic<int> correct{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (grade("\\frac{x^2-1}{x-1}", "\\boxed{x+1}").passed) ++correct;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(correct.load(), 800);
}

TEST(MathGrader, MissingReferenceIsATaskError) {
  tasks::Task task;
  task.id = "x";
  task.domain = "math";
  task.prompt = "p";
  graders::GradeContext context;
  EXPECT_THROW(graders::grade(graders::Registry::builtin(), task, "\\boxed{1}", {}, context), tasks::TaskError);
}

// What a teacher can act on: a format problem, a truncation or a revealed answer; not a sentence
// that only restates the verdict.
TEST(MathGrader, FeedbackIsInformativeOnlyWhenItSaysMoreThanTheVerdict) {
  EXPECT_FALSE(grade("12", "\\boxed{12}").informative);
  EXPECT_FALSE(grade("12", "\\boxed{13}").informative);
  EXPECT_EQ(grade("12", "\\boxed{13}").feedback, "The final answer 13 is incorrect.");
  EXPECT_TRUE(grade("12", "I think 13").informative);                      // no \boxed{}
  EXPECT_TRUE(grade("12", "I think 12").informative);                      // right, but not boxed
  EXPECT_TRUE(grade("12", "").informative);                                // no answer at all
  EXPECT_TRUE(grade("12", "\\boxed{1").informative);                       // cut off in the box
  EXPECT_TRUE(grade("12", "<think>long \\boxed{13}").informative);        // truncated reasoning
  graders::GradeOptions reveal;
  reveal.reveal_answer = true;
  EXPECT_TRUE(grade("12", "\\boxed{13}", reveal).informative);
  EXPECT_EQ(graders::to_json(grade("12", "\\boxed{13}"))["informative"], false);
}
