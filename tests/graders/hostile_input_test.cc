// Randomised hostile responses (deterministic seed) through the math and science graders and the
// task parser: nothing may throw (other than TaskError for bad tasks), crash or hang.
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "graders/grader.h"

using namespace distil;

namespace {

const std::vector<std::string> kTokens = {
    "\\frac", "{", "}", "^", "_", "\\sqrt", "(", ")", "[", "]", "\\boxed{", "$", "$$", "x", "y", "1", "9999", "0", ".5",
    ",", ";", "=", "<", ">=", "\\le", "\\pm", "\\cup", "\\begin{pmatrix}", "&", "\\\\", "\\end{pmatrix}", "\\text{",
    "%", "!", ".", "-", "+", "*", "/", "e", "\\pi", "\\infty", "\\sum_{k=1}^{n}", "\\left(", "\\right)", " and ", " or ",
    "\\{", "\\}", "|", "**", "<think>", "</think>", "Answer:", "final answer is", "\\in", "\\approx", "\\sin", "\\log_",
    "\\binom", "\\dfrac", "{,}", "\\!", "\\ ", " ", "\n", "\\(", "\\)", "\\[", "\\]", "A", "(B)", "true", "km", "\\times10^{",
    "\\mathrm{", "\\operatorname{", "\\begin{array}{cc}", "\\end{array}", "2^{64}", "\\fbox{", "12:00", "1,000", "\xff", "\\"};

std::string random_text(std::mt19937& rng, std::size_t max_tokens) {
  std::uniform_int_distribution<std::size_t> count(0, max_tokens), pick(0, kTokens.size() - 1);
  std::string s;
  for (std::size_t i = count(rng); i > 0; --i) s += kTokens[pick(rng)];
  return s;
}

}  // namespace

TEST(HostileInput, RandomResponsesNeverThrowOrHang) {
  std::mt19937 rng(20260523);
  graders::GradeContext context;
  const auto start = std::chrono::steady_clock::now();
  double worst_ms = 0;
  int graded = 0, references_rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    const std::string reference = random_text(rng, 8);
    const std::string response = random_text(rng, 60);
    for (const char* domain : {"math", "science"}) {
      tasks::Task task;
      task.id = "fuzz";
      task.domain = domain;
      task.prompt = "p";
      task.answer = reference.empty() ? "1" : reference;
      const auto t0 = std::chrono::steady_clock::now();
      try {
        auto r = graders::grade(graders::Registry::builtin(), task, response, {}, context);
        EXPECT_GE(r.reward, 0.0);
        EXPECT_LE(r.reward, 1.0);
        EXPECT_LE(r.feedback.size(), 2000u);
        ++graded;
      } catch (const tasks::TaskError&) {
        ++references_rejected;  // a science reference that names no choice, say: the task is bad, not the response
      }
      worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "graded " << graded << " random responses (" << references_rejected << " random references rejected) in "
            << total_s << " s; slowest " << worst_ms << " ms\n";
  EXPECT_GT(graded, 3000);
  EXPECT_LT(worst_ms, 5000.0) << "one hostile response must not stall a worker";
}

TEST(HostileInput, RandomTaskRecordsGiveTaskErrorsOnly) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> kind(0, 6);
  for (int i = 0; i < 2000; ++i) {
    nlohmann::json j = {{"id", random_text(rng, 3)}, {"domain", i % 2 ? "math" : "code"}, {"prompt", random_text(rng, 5)}};
    switch (kind(rng)) {
      case 0: j["answer"] = random_text(rng, 3); break;
      case 1: j["tests"] = {{{"input", random_text(rng, 2)}}}; break;
      case 2: j["tests"] = "x"; break;
      case 3: j["choices"] = {1, 2}; break;
      case 4: j["metadata"] = {{"func_name", 5}}; break;
      case 5: j[random_text(rng, 2)] = nullptr; break;
      default: break;
    }
    try {
      tasks::task_from_json(j);
    } catch (const tasks::TaskError& e) {
      EXPECT_FALSE(e.field().empty());
    }
  }
}
