// Math answers: the final answer is extracted from the response (ignoring <think> blocks) and
// compared with the reference by value (see math_parse.cc and math_compare.cc), not by string.
#include "common/reasoning.h"
#include "graders/builtin_graders.h"
#include "graders/feedback_text.h"
#include "graders/math_answer.h"
#include "graders/math_value.h"
#include "graders/text_util.h"

namespace distil::graders {
namespace {

// True if the last \boxed{ never closes: the response was cut off while writing the answer.
bool unclosed_box(const std::string& body) {
  std::size_t at = body.rfind("\\boxed{");
  if (at == std::string::npos) return false;
  int depth = 0;
  for (std::size_t i = at + 6; i < body.size(); ++i) {
    if (body[i] == '\\' && i + 1 < body.size()) {
      ++i;
      continue;
    }
    if (body[i] == '{') ++depth;
    else if (body[i] == '}' && --depth == 0) return false;
  }
  return true;
}

class MathGrader final : public Grader {
 public:
  std::string name() const override { return "math"; }
  std::string description() const override {
    return "Math answers: last \\boxed{} (or \"final answer is\", \"Answer:\", last number) compared with the "
           "reference by value: exact rationals, floats rounded to float_places, symbolic equality (GiNaC), "
           "tuples, sets, intervals, matrices, equations and inequalities.";
  }

  GradeResult grade(const tasks::Task& task, const std::string& response, const GradeOptions& options,
                    GradeContext&) const override {
    if (!task.answer || text::trim(*task.answer).empty()) throw tasks::TaskError("answer", "the math grader needs a reference answer");
    GradeResult result;
    bool unterminated = false;
    const std::string body = common::strip_think(response, &unterminated);
    if (text::trim(body).empty()) {
      result.verdict = "format_error";
      result.feedback = feedback::empty_response(unterminated, "Put the final answer in \\boxed{}.");
      result.details["truncated"] = unterminated;
      return result;
    }
    math::CompareOptions compare;
    compare.float_places = options.float_places;
    const math::ExtractTargets targets;  // LaTeX and plain numbers

    // Hold the GiNaC lock for the whole grading so every value is also destroyed under it.
    std::lock_guard lock(math::ginac_mutex());
    std::vector<math::Answer> predicted = math::extract_answers(body, targets);
    const bool cut_in_box = unclosed_box(body);
    result.details["truncated"] = unterminated || cut_in_box;
    if (predicted.empty() || (cut_in_box && predicted.front().source != "boxed")) {
      result.verdict = "format_error";
      result.feedback = cut_in_box ? "The response was cut off inside \\boxed{...}: the final answer is incomplete. "
                                     "Reason more briefly so the answer fits."
                                   : "No final answer was found in the response. State it as \\boxed{...} at the end.";
      if (unterminated) result.feedback += feedback::kAlsoUnfinishedThink;
      return result;
    }
    std::vector<math::Answer> reference{math::parse_reference(*task.answer)};
    if (!reference.front().parsed) {
      // A reference with prose around it ("$\frac12$ of the cake"): extract it like a response.
      auto extracted = math::extract_answers(*task.answer, targets);
      reference.insert(reference.end(), extracted.begin(), extracted.end());
    }
    const bool correct = math::equivalent(reference, predicted, compare);
    const math::Answer& shown = predicted.front();
    result.extracted = shown.text;
    result.passed = correct;
    result.reward = correct ? 1.0 : 0.0;
    result.verdict = correct ? "accepted" : "wrong_answer";
    result.details["extracted_from"] = shown.source;
    result.details["answer_parsed"] = static_cast<bool>(shown.parsed);
    result.details["reference_parsed"] = static_cast<bool>(reference.front().parsed);

    const bool boxed = shown.source == "boxed";
    if (correct) {
      result.feedback = boxed ? "Correct." : "Correct, but the final answer was not in \\boxed{}; put it there next time.";
      result.informative = !boxed;
      return result;
    }
    // A well-formatted wrong answer gets a sentence that only restates the verdict; the format
    // notes, a truncation or the revealed answer are what a teacher could act on.
    result.informative = !boxed || unterminated || options.reveal_answer;
    std::string feedback = "The final answer " + text::truncate_utf8(shown.text, 300) + " is incorrect.";
    if (!boxed) {
      feedback += " No \\boxed{} answer was found, so the " +
                  std::string(shown.source == "number" ? "last number" : "last mathematical expression") +
                  " in the response was taken as the answer; put the final answer in \\boxed{}.";
    }
    if (unterminated) feedback += " The response appears truncated: it ended inside an unfinished <think> block.";
    if (options.reveal_answer) feedback += " The correct answer is " + text::truncate_utf8(*task.answer, 300) + ".";
    result.feedback = feedback;
    return result;
  }
};

}  // namespace

std::unique_ptr<Grader> make_math_grader() { return std::make_unique<MathGrader>(); }

}  // namespace distil::graders
