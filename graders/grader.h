// Turning (task, response) into reward + rich feedback, and the registry new domains plug into.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sandbox/sandbox.h"
#include "tasks/task.h"

namespace distil::graders {

// Per-request knobs (the API's "options" object). Unknown keys are errors naming the key.
struct GradeOptions {
  bool reveal_answer = false;         // math/science: put the reference answer in the feedback
  bool run_all_tests = false;         // code: do not stop at the first failing test
  int max_failures_shown = 2;         // code: failing tests described in the feedback
  std::size_t max_feedback_chars = 2000;
  double per_test_timeout_s = 6.0;    // code
  std::size_t memory_mb = 512;        // code
  int float_places = 6;               // math: decimal places for float comparison
  double relative_tolerance = 0.01;   // science numeric answers
  // science: "default" (read the intended answer from many formats) or "strict" (SDPO's MCQ
  // reward exactly); empty: the task's metadata.science_mode, else "default".
  std::string science_mode;
};
// Throws std::invalid_argument("options.<key>: <problem>").
GradeOptions options_from_json(const nlohmann::json& j, const GradeOptions& defaults = {});

// The verdicts of DESIGN.md: accepted, wrong_answer, runtime_error, time_limit, memory_limit,
// output_limit, compile_error, format_error, sandbox_error.
struct GradeResult {
  std::string task_id;
  double reward = 0.0;  // 0..1
  bool passed = false;
  std::string verdict = "wrong_answer";
  std::string feedback;   // the text the teacher reads
  // Whether the feedback says more than the verdict: what failed and where (a failing test, a
  // traceback, a format problem), as opposed to a bare "Correct." / "The answer 84 is incorrect.".
  // A trainer builds a teacher context from informative feedback only (SDPO's semantics); the
  // rest would re-prompt the teacher with a sentence that tells it nothing. Graders that know
  // their text restates the verdict set it false.
  bool informative = true;
  std::string extracted;  // extracted final answer or code
  nlohmann::json details = nlohmann::json::object();
  nlohmann::json timing = nlohmann::json::object();  // {"grade_ms": ...}
};
nlohmann::json to_json(const GradeResult& r);

// What a grader may use. The sandbox is shared and thread-safe; it may be null for graders that
// never run code (they must not need it).
struct GradeContext {
  sandbox::Sandbox* sandbox = nullptr;
};

class Grader {
 public:
  virtual ~Grader() = default;
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  // Must be thread-safe and must not throw for any response text (hostile input is graded, not
  // thrown); may throw tasks::TaskError for a task the grader cannot handle.
  virtual GradeResult grade(const tasks::Task& task, const std::string& response,
                            const GradeOptions& options, GradeContext& context) const = 0;
  // True if grade() runs programs: callers construct a sandbox only for graders that need one.
  virtual bool needs_sandbox() const { return false; }
};

class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Grader>()>;

  // The process-wide registry with the built-in graders (code, math, science, script) registered.
  static Registry& builtin();

  void add(const std::string& name, Factory factory);  // throws if the name is taken
  const Grader* find(const std::string& name) const;   // nullptr if unknown
  // task.grader if set, else the domain's default grader; throws tasks::TaskError("grader", ...)
  // or ("domain", ...) when none fits.
  const Grader& for_task(const tasks::Task& task) const;
  void set_domain_default(const std::string& domain, const std::string& grader);
  std::vector<std::string> names() const;
  const std::map<std::string, std::unique_ptr<Grader>>& graders() const { return graders_; }

 private:
  std::map<std::string, std::unique_ptr<Grader>> graders_;
  std::map<std::string, std::string> domain_defaults_;
};

// Convenience: pick the grader, time it, fill task_id and timing.
GradeResult grade(const Registry& registry, const tasks::Task& task, const std::string& response,
                  const GradeOptions& options, GradeContext& context);

}  // namespace distil::graders
