// Code answers, run against the task's tests in the sandbox with LiveCodeBench semantics:
// stdin tests compare whole outputs line by line (exactly, or token by token as decimals);
// functional tests call Solution().<func_name>(*args) with one JSON argument per input line and
// compare the JSON result exactly. The feedback reads like LeetCode's.
#include <algorithm>
#include <cctype>
#include <sstream>

#include "graders/builtin_graders.h"
#include "graders/code_support.h"
#include "graders/text_util.h"

namespace distil::graders {
namespace {

constexpr std::size_t kFieldChars = 400;  // each of Input/Output/Expected/Debug Output in feedback

// Appended after the candidate's code for functional tests. The candidate's own prints go to
// stderr (they become the Debug Output); the result is the last line of stdout.
constexpr const char* kFunctionalHarness = R"PY(

# ---- distil functional-test harness ----
def _distil_run_functional():
    import sys as _sys, json as _json
    _out = _sys.stdout
    _sys.stdout = _sys.stderr
    _args = [_json.loads(_line) for _line in _sys.stdin.read().split("\n") if _line.strip()]
    _name = _DISTIL_FUNC_NAME
    _g = globals()
    if "Solution" in _g:
        _fn = getattr(_g["Solution"](), _name)
    else:
        _fn = _g[_name]
    _result = _fn(*_args)
    _out.write("\n" + _json.dumps(_result) + "\n")
    _out.flush()
_distil_run_functional()
)PY";

constexpr const char* kFunctionalPrelude =
    "from typing import *; from collections import *; from heapq import *; from bisect import *; "
    "from itertools import *; from functools import *; import math, heapq, bisect, itertools, functools, collections, "
    "string, re, sys\n";

std::string python_string_literal(const std::string& s) {
  return nlohmann::json(s).dump();  // a JSON string is a valid Python string literal
}

struct TestOutcome {
  bool passed = false;
  std::string verdict;  // accepted, wrong_answer, runtime_error, time_limit, memory_limit, output_limit, compile_error, sandbox_error
  std::string output;   // what the program printed (functional: the JSON result)
  std::string debug;    // stderr (functional: also the program's own prints)
  std::string message;
  double cpu_s = 0;
};

std::string verdict_of(const sandbox::RunResult& r) {
  if (r.compile_error) return "compile_error";
  switch (r.verdict) {
    case sandbox::Verdict::ok: return "accepted";
    case sandbox::Verdict::runtime_error: return "runtime_error";
    case sandbox::Verdict::syscall_denied: return "runtime_error";
    case sandbox::Verdict::time_limit: return "time_limit";
    case sandbox::Verdict::memory_limit: return "memory_limit";
    case sandbox::Verdict::output_limit: return "output_limit";
    case sandbox::Verdict::sandbox_error: return "sandbox_error";
  }
  return "sandbox_error";
}

std::string title_of(const std::string& verdict) {
  if (verdict == "wrong_answer") return "Wrong Answer";
  if (verdict == "runtime_error") return "Runtime Error";
  if (verdict == "time_limit") return "Time Limit Exceeded";
  if (verdict == "memory_limit") return "Memory Limit Exceeded";
  if (verdict == "output_limit") return "Output Limit Exceeded";
  if (verdict == "compile_error") return "Compile Error";
  return "Internal Error";
}

std::string field(const std::string& s) {
  std::string t = s;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return text::truncate_utf8(t, kFieldChars, "\n... (truncated)");
}

class CodeGrader final : public Grader {
 public:
  std::string name() const override { return "code"; }
  std::string description() const override {
    return "Programs (Python or C++) from the last fenced code block, run against the task's stdin or "
           "functional tests in the sandbox with LiveCodeBench comparison rules; LeetCode-style feedback.";
  }
  bool needs_sandbox() const override { return true; }

  GradeResult grade(const tasks::Task& task, const std::string& response, const GradeOptions& options,
                    GradeContext& context) const override {
    if (task.tests.empty()) throw tasks::TaskError("tests", "the code grader needs at least one test");
    bool functional = false, stdin_tests = false;
    for (const auto& t : task.tests) (t.type == tasks::TestType::functional ? functional : stdin_tests) = true;
    if (functional && stdin_tests) throw tasks::TaskError("tests", "mixes stdin and functional tests");
    std::string func_name;
    if (functional) {
      auto it = task.metadata.find("func_name");
      if (it == task.metadata.end() || !it->is_string() || !code::is_python_identifier(it->get<std::string>()))
        throw tasks::TaskError("metadata.func_name", "functional tests need a Python identifier here");
      func_name = it->get<std::string>();
    }

    GradeResult result;
    bool unterminated_think = false;
    const std::string body = text::strip_think(response, &unterminated_think);
    const code::CodeBlock block = code::last_code_block(body);
    if (!block.found) {
      result.verdict = "format_error";
      result.feedback = block.unterminated
                            ? "The response was cut off inside its code block (no closing ```), so there is no complete "
                              "program to run. Write a shorter solution and close the code block."
                            : unterminated_think ? "The response ended inside its <think> block, before any code. Finish "
                                                   "reasoning earlier and give the program in a ```python code block."
                                                 : "No code block was found. Put the complete program in a fenced "
                                                   "```python ... ``` block.";
      result.details = {{"tests_passed", 0}, {"tests_total", task.tests.size()}, {"fraction_passed", 0.0}};
      return result;
    }
    result.extracted = block.code;
    sandbox::Program program;
    program.language = code::language_for(block.language, task.metadata);
    if (functional && program.language != sandbox::Language::python)
      throw tasks::TaskError("tests", "functional tests are only supported for Python solutions");
    program.source = block.code;
    if (functional) {
      // LeetCode starter code uses typing names (List[int]) and the usual modules unimported;
      // one prefixed line (tracebacks shift by one line) makes them available as on LeetCode.
      program.source = std::string(kFunctionalPrelude) + program.source;
      program.source += "\n\n_DISTIL_FUNC_NAME = " + python_string_literal(func_name) + kFunctionalHarness;
    }
    if (!context.sandbox) throw std::runtime_error("the code grader needs a sandbox and none is configured");

    sandbox::Limits limits;
    limits.cpu_time_s = options.per_test_timeout_s;
    limits.memory_mb = options.memory_mb;
    std::vector<std::string> inputs;
    inputs.reserve(task.tests.size());
    for (const auto& t : task.tests) inputs.push_back(t.input);
    const std::vector<sandbox::RunResult> runs =
        context.sandbox->run_batch(program, inputs, limits, /*stop_at_first_failure=*/!options.run_all_tests);

    std::vector<TestOutcome> outcomes;
    std::size_t passed = 0;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      TestOutcome o = judge(runs[i], task.tests[i], functional);
      passed += o.passed;
      outcomes.push_back(std::move(o));
      if (!outcomes.back().passed && !options.run_all_tests) break;
    }
    const std::size_t total = task.tests.size();
    const bool all_passed = passed == total;
    result.passed = all_passed;
    result.reward = all_passed ? 1.0 : 0.0;
    result.verdict = "accepted";
    for (const auto& o : outcomes) {
      if (!o.passed) {
        result.verdict = o.verdict;
        break;
      }
    }
    if (!all_passed && result.verdict == "accepted") result.verdict = "wrong_answer";  // defensive: not all ran

    nlohmann::json per_test = nlohmann::json::array();
    for (std::size_t i = 0; i < outcomes.size(); ++i) {
      per_test.push_back({{"test", i + 1}, {"verdict", outcomes[i].passed ? "accepted" : outcomes[i].verdict}, {"cpu_s", outcomes[i].cpu_s}});
    }
    result.details = {{"tests_passed", passed},
                      {"tests_total", total},
                      {"tests_run", outcomes.size()},
                      {"fraction_passed", total ? static_cast<double>(passed) / static_cast<double>(total) : 0.0},
                      {"language", sandbox::to_string(program.language)},
                      {"test_type", functional ? "functional" : "stdin"},
                      {"tests", per_test}};
    result.feedback = feedback(task, outcomes, passed, total, options, functional);
    // A failure's feedback shows the failing test (input, expected, actual, traceback); an
    // accepted program's feedback only says so.
    result.informative = !all_passed;
    return result;
  }

 private:
  static TestOutcome judge(const sandbox::RunResult& run, const tasks::TestCase& test, bool functional) {
    TestOutcome o;
    o.cpu_s = run.cpu_time_s;
    o.debug = run.stderr_data;
    o.message = run.message;
    o.verdict = verdict_of(run);
    if (run.verdict != sandbox::Verdict::ok || run.compile_error) {
      o.output = run.stdout_data;
      if (run.verdict == sandbox::Verdict::syscall_denied && o.debug.empty()) o.debug = "forbidden system call: " + run.message;
      return o;
    }
    if (functional) {
      // The harness writes the result as the last non-empty line; anything before it is the
      // program's own output.
      std::string out = run.stdout_data;
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
      std::size_t nl = out.rfind('\n');
      o.output = nl == std::string::npos ? out : out.substr(nl + 1);
      if (nl != std::string::npos && !text::trim(out.substr(0, nl)).empty()) o.debug = out.substr(0, nl) + "\n" + o.debug;
      o.passed = code::functional_outputs_match(o.output, test.output);
    } else {
      o.output = run.stdout_data;
      o.passed = code::stdin_outputs_match(run.stdout_data, test.output);
    }
    o.verdict = o.passed ? "accepted" : "wrong_answer";
    return o;
  }

  static std::string feedback(const tasks::Task& task, const std::vector<TestOutcome>& outcomes, std::size_t passed,
                              std::size_t total, const GradeOptions& options, bool functional) {
    std::ostringstream out;
    if (passed == total) {
      out << "Accepted: all " << total << " tests passed.";
      return out.str();
    }
    int shown = 0;
    bool first = true;
    for (std::size_t i = 0; i < outcomes.size() && shown < options.max_failures_shown; ++i) {
      const TestOutcome& o = outcomes[i];
      if (o.passed) continue;
      ++shown;
      if (!first) out << "\n\n";
      first = false;
      const tasks::TestCase& test = task.tests[i];
      if (o.verdict == "compile_error") {
        out << "Compile Error\n" << field(o.debug.empty() ? o.message : o.debug);
        break;  // every test fails the same way
      }
      if (o.verdict == "sandbox_error") {
        out << "Internal Error: the sandbox could not run the program (" << field(o.message) << ").";
        break;
      }
      out << "Test Case " << (i + 1) << ": " << title_of(o.verdict);
      if (o.verdict == "time_limit") out << " (limit " << options.per_test_timeout_s << " s CPU)";
      if (o.verdict == "memory_limit") out << " (limit " << options.memory_mb << " MB)";
      out << "\nInput:\n" << field(test.input);
      if (o.verdict == "runtime_error") {
        out << "\n" << (o.debug.empty() ? "(no error output)" : field(o.debug));
        if (!o.output.empty()) out << "\nOutput:\n" << field(o.output);
      } else if (o.verdict == "wrong_answer") {
        out << "\nOutput:\n" << (o.output.empty() ? "(empty)" : field(o.output));
        out << "\nExpected:\n" << field(test.output);
        if (!text::trim(o.debug).empty()) out << "\nDebug Output:\n" << field(o.debug);
      } else {
        if (!text::trim(o.output).empty()) out << "\nOutput:\n" << field(o.output);
        if (!text::trim(o.debug).empty()) out << "\nDebug Output:\n" << field(o.debug);
      }
    }
    (void)functional;
    out << "\n\nPassed " << passed << "/" << total << " tests";
    if (!options.run_all_tests && outcomes.size() < total) out << " (stopped at the first failure)";
    out << ".";
    return out.str();
  }
};

}  // namespace

std::unique_ptr<Grader> make_code_grader() { return std::make_unique<CodeGrader>(); }

}  // namespace distil::graders
