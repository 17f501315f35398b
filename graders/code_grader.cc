// Code answers, run against the task's tests in the sandbox with LiveCodeBench semantics:
// stdin tests compare whole outputs line by line (exactly, or token by token as decimals);
// functional tests call Solution().<func_name>(*args) with one JSON argument per input line, all
// tests in one process, and compare the result with Python's == outside the sandbox (see
// code_runner.h). The feedback reads like LeetCode's.
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <optional>
#include <sstream>

#include "common/reasoning.h"
#include "graders/builtin_graders.h"
#include "graders/code_runner.h"
#include "graders/code_support.h"
#include "graders/code_values.h"
#include "graders/text_util.h"

namespace distil::graders {
namespace {

constexpr std::size_t kFieldChars = 400;       // each of Input/Output/Expected/Debug Output in feedback
constexpr std::size_t kTracebackChars = 800;   // a traceback keeps its head and its end (the exception line)
// LiveCodeBench has no output cap; ours is large enough for any real expected output and keeps a
// flood from filling the server's memory (stdout and, separately, stderr are held per run).
constexpr std::size_t kStdoutCapBytes = 32u << 20;
constexpr std::size_t kStderrCapBytes = 1u << 20;
constexpr const char* kStdoutCapText = "32 MiB";
constexpr const char* kTestMarker = "\x1e\x1f" "distil-test ";

std::string python_string_literal(const std::string& s) {
  // A JSON string is a valid Python string literal; invalid UTF-8 becomes U+FFFD.
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

sandbox::Program stdin_runner(const std::string& source) {
  sandbox::Program p;
  // The import block is the prelude: the same for every candidate, so a warm fork server binds
  // its names once and every test's process shares them (binding them per test was most of a
  // test's cost there).
  p.prelude = code::kLcbImports;
  p.setup = "_SRC = " + python_string_literal(source) + "\n" + code::kRunnerCommon + code::kStdinSetup;
  p.source = code::kStdinMain;
  return p;
}

sandbox::Program functional_runner(const std::string& source, const std::string& func_name) {
  sandbox::Program p;
  p.setup = "_SRC = " + python_string_literal(source) + "\n_IMPORTS = " + python_string_literal(code::kLcbImports) +
            "\n_FUNC = " + python_string_literal(func_name) + "\n" + code::kRunnerCommon + code::kFunctionalRunner;
  p.source = code::kFunctionalMain;
  return p;
}

struct TestOutcome {
  bool passed = false;
  std::string verdict;  // accepted, wrong_answer, runtime_error, time_limit, memory_limit, output_limit, compile_error, sandbox_error
  std::string output;   // what the program printed (functional: the repr of its result)
  std::string debug;    // stderr (functional: also the program's own prints)
  std::string error;    // functional: the traceback or why the result is not a plain value
  std::string message;  // how the run ended, when that explains the verdict ("killed by signal SIGSEGV ...")
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

std::string signal_name(int sig) {
  static const std::pair<int, const char*> names[] = {
      {SIGSEGV, "SIGSEGV"}, {SIGABRT, "SIGABRT"}, {SIGKILL, "SIGKILL"}, {SIGFPE, "SIGFPE"}, {SIGBUS, "SIGBUS"},
      {SIGILL, "SIGILL"},   {SIGTERM, "SIGTERM"}, {SIGPIPE, "SIGPIPE"}, {SIGSYS, "SIGSYS"}, {SIGTRAP, "SIGTRAP"},
      {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"}, {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},  {SIGALRM, "SIGALRM"},
      {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"}};
  for (const auto& [n, name] : names)
    if (n == sig) return name;
  return "signal " + std::to_string(sig);
}

// How a failed run ended, in words: "killed by signal SIGSEGV (Segmentation fault)", "exit code 1".
std::string how_it_ended(const sandbox::RunResult& r) {
  if (r.signal > 0) {
    const char* what = strsignal(r.signal);
    return "killed by signal " + signal_name(r.signal) + (what ? std::string(" (") + what + ")" : std::string());
  }
  if (r.exit_code > 0) return "exit code " + std::to_string(r.exit_code);
  return {};
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

std::string strip_trailing_newlines(std::string t) {
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

// At most `max_chars`: the head and the end are kept and the middle is cut (as LiveCodeBench's
// truncatefn does), so a traceback keeps its exception line. UTF-8 safe.
std::string field(const std::string& s, std::size_t max_chars = kFieldChars) {
  std::string t = strip_trailing_newlines(s);
  if (t.size() <= max_chars) return t;
  const std::string marker = "\n... (" + std::to_string(t.size() - max_chars) + " characters cut) ...\n";
  const std::size_t head = max_chars / 4, tail = max_chars - head;
  std::size_t tail_start = t.size() - tail;
  while (tail_start < t.size() && (static_cast<unsigned char>(t[tail_start]) & 0xC0) == 0x80) ++tail_start;
  return text::truncate_utf8(t, head, "") + marker + t.substr(tail_start);
}

// Splits the functional runner's stderr at its per-test markers: part k is test k's Debug Output
// (part 0 also holds what the program printed while it was loaded).
std::vector<std::string> split_debug(const std::string& err, std::size_t tests) {
  std::vector<std::string> parts(std::max<std::size_t>(tests, 1));
  std::size_t current = 0, pos = 0;
  const std::string marker = kTestMarker;
  while (pos <= err.size()) {
    std::size_t at = err.find(marker, pos);
    const std::size_t end = at == std::string::npos ? err.size() : at;
    if (current < parts.size()) parts[current] += err.substr(pos, end - pos);
    if (at == std::string::npos) break;
    std::size_t close = err.find("\x1f\n", at + marker.size());
    if (close == std::string::npos) break;
    try {
      current = std::stoul(err.substr(at + marker.size(), close - at - marker.size()));
    } catch (const std::exception&) {
    }
    pos = close + 2;
  }
  return parts;
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
    const std::string body = common::strip_think(response, &unterminated_think);
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
    if (!context.sandbox) throw std::runtime_error("the code grader needs a sandbox and none is configured");

    std::vector<TestOutcome> outcomes;
    if (functional) {
      outcomes = run_functional(task, block.code, func_name, options, *context.sandbox);
    } else {
      if (program.language == sandbox::Language::python) {
        program = stdin_runner(block.code);
      } else {
        program.source = block.code;
      }
      sandbox::Limits limits;
      limits.cpu_time_s = options.per_test_timeout_s;
      limits.memory_mb = options.memory_mb;
      limits.output_bytes = kStdoutCapBytes;
      limits.stderr_bytes = kStderrCapBytes;
      std::vector<std::string> inputs;
      inputs.reserve(task.tests.size());
      for (const auto& t : task.tests) inputs.push_back(t.input);
      const std::vector<sandbox::RunResult> runs =
          context.sandbox->run_batch(program, inputs, limits, /*stop_at_first_failure=*/!options.run_all_tests);
      for (std::size_t i = 0; i < runs.size(); ++i) {
        outcomes.push_back(judge_stdin(runs[i], task.tests[i]));
        if (!outcomes.back().passed && !options.run_all_tests) break;
      }
    }
    std::size_t passed = 0;
    for (const auto& o : outcomes) passed += o.passed;
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
    result.feedback = feedback(task, outcomes, passed, total, options);
    // A failure's feedback shows the failing test (input, expected, actual, traceback); an
    // accepted program's feedback only says so.
    result.informative = !all_passed;
    return result;
  }

 private:
  static TestOutcome judge_stdin(const sandbox::RunResult& run, const tasks::TestCase& test) {
    TestOutcome o;
    o.cpu_s = run.cpu_time_s;
    o.debug = run.stderr_data;
    o.verdict = verdict_of(run);
    o.output = run.stdout_data;
    if (run.verdict != sandbox::Verdict::ok || run.compile_error) {
      o.message = run.compile_error ? run.message : how_it_ended(run);
      if (run.verdict == sandbox::Verdict::syscall_denied) o.message = "forbidden system call: " + run.message;
      if (run.verdict == sandbox::Verdict::sandbox_error) o.message = run.message;
      return o;
    }
    o.passed = code::stdin_outputs_match(run.stdout_data, test.output);
    o.verdict = o.passed ? "accepted" : "wrong_answer";
    return o;
  }

  // Every functional test of the problem in one process (module and instance state persist, as in
  // LiveCodeBench); each result is compared here, never inside the sandbox.
  static std::vector<TestOutcome> run_functional(const tasks::Task& task, const std::string& source,
                                                 const std::string& func_name, const GradeOptions& options,
                                                 sandbox::Sandbox& box) {
    const std::size_t n = task.tests.size();
    std::vector<std::optional<code::PyValue>> expected(n);
    nlohmann::json tests = nlohmann::json::array();
    for (std::size_t i = 0; i < n; ++i) {
      const auto& t = task.tests[i];
      std::size_t pos = 0;
      while (pos <= t.input.size()) {
        std::size_t nl = t.input.find('\n', pos);
        const std::string line = text::trim(std::string_view(t.input).substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
        if (!line.empty() && !code::parse_python_json(line))
          throw tasks::TaskError("tests[" + std::to_string(i) + "].input", "a functional test's input line is not JSON");
        if (nl == std::string::npos) break;
        pos = nl + 1;
      }
      expected[i] = code::parse_python_json(text::trim(t.output));
      tests.push_back(t.input);
    }
    const nlohmann::json request = {{"tests", tests}, {"cpu_s", options.per_test_timeout_s}, {"all", options.run_all_tests}};
    const sandbox::Program program = functional_runner(source, func_name);
    sandbox::Limits limits;
    // The runner stops a test at the per-test limit itself; the whole run is bounded from outside
    // by the sum (plus a second for loading).
    limits.cpu_time_s = std::min(3000.0, options.per_test_timeout_s * static_cast<double>(n) + 1.0);
    limits.memory_mb = options.memory_mb;
    limits.output_bytes = kStdoutCapBytes;
    limits.stderr_bytes = kStderrCapBytes;
    const sandbox::RunResult run =
        box.run(program, request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), limits);

    std::vector<TestOutcome> outcomes;
    const std::vector<std::string> debug = split_debug(run.stderr_data, n);
    auto debug_of = [&](std::size_t k) { return k < debug.size() ? debug[k] : std::string(); };
    if (run.verdict == sandbox::Verdict::sandbox_error) {
      TestOutcome o;
      o.verdict = "sandbox_error";
      o.message = run.message;
      return {o};
    }
    // Frames, one a line (see code_runner.h).
    std::vector<bool> started(n, false);
    std::vector<std::optional<TestOutcome>> done(n);
    std::optional<std::string> load_error;
    std::size_t pos = 0;
    const std::string& out = run.stdout_data;
    while (pos < out.size()) {
      std::size_t nl = out.find('\n', pos);
      if (nl == std::string::npos) break;  // a frame cut by the output cap
      const std::string line = out.substr(pos, nl - pos);
      pos = nl + 1;
      if (line.size() < 2 || line[1] != ' ') continue;
      const char kind = line[0];
      std::string rest = line.substr(2);
      if (kind == 'L' || kind == 'H') {
        auto text = code::parse_python_json(rest);
        const std::string message = text && text->kind == code::PyValue::Kind::string ? text->text : rest;
        if (kind == 'H') {
          TestOutcome o;
          o.verdict = "sandbox_error";
          o.message = message;
          return {o};
        }
        load_error = message;
        continue;
      }
      std::size_t sp = rest.find(' ');
      std::size_t k = 0;
      try {
        k = std::stoul(rest.substr(0, sp));
      } catch (const std::exception&) {
        continue;
      }
      if (k >= n) continue;
      if (kind == 'S') {
        started[k] = true;
        continue;
      }
      rest = sp == std::string::npos ? std::string() : rest.substr(sp + 1);
      sp = rest.find(' ');
      TestOutcome o;
      try {
        o.cpu_s = std::stod(rest.substr(0, sp));
      } catch (const std::exception&) {
      }
      const std::string payload = sp == std::string::npos ? std::string() : rest.substr(sp + 1);
      o.debug = debug_of(k);
      if (kind == 'R') {
        auto value = code::parse_tagged_result(payload);
        if (!value) {
          o.verdict = "wrong_answer";
          o.error = "The result could not be read back from the program.";
        } else {
          // As LiveCodeBench: only a top-level tuple counts as a list.
          if (value->kind == code::PyValue::Kind::tuple) value->kind = code::PyValue::Kind::list;
          o.output = code::python_repr(*value, 64 * 1024);
          o.passed = expected[k] ? code::python_equal(*value, *expected[k]) : o.output == text::trim(task.tests[k].output);
          o.verdict = o.passed ? "accepted" : "wrong_answer";
        }
      } else if (kind == 'U') {
        auto name = code::parse_python_json(payload);
        o.verdict = "wrong_answer";
        o.error = "The function returned " +
                  (name && name->kind == code::PyValue::Kind::string ? "an object of type " + name->text : std::string("something")) +
                  ", not a plain value (None, bool, int, float, str, list, tuple, dict or set of those), so it "
                  "cannot equal the expected value.";
        if (name && name->kind == code::PyValue::Kind::string && name->text.find("nested") != std::string::npos)
          o.error = "The function returned " + name->text + ", which cannot be compared.";
      } else if (kind == 'X') {
        auto trace = code::parse_python_json(payload);
        o.verdict = "runtime_error";
        o.error = trace && trace->kind == code::PyValue::Kind::string ? trace->text : payload;
      } else if (kind == 'T') {
        o.verdict = "time_limit";
      } else {
        continue;
      }
      done[k] = std::move(o);
    }
    for (std::size_t k = 0; k < n; ++k) {
      if (load_error) {
        TestOutcome o;
        o.verdict = "runtime_error";
        o.error = *load_error;
        o.debug = debug_of(0);
        outcomes.push_back(std::move(o));
        break;
      }
      if (done[k]) {
        outcomes.push_back(std::move(*done[k]));
      } else if (started[k] || k == 0) {
        // The run ended during this test (or before the first one): how it ended is the verdict.
        TestOutcome o;
        o.debug = debug_of(k);
        o.cpu_s = run.cpu_time_s;
        o.verdict = run.verdict == sandbox::Verdict::ok ? "runtime_error" : verdict_of(run);
        o.message = run.verdict == sandbox::Verdict::ok ? std::string("the program ended during the call (exit code 0)")
                    : run.verdict == sandbox::Verdict::syscall_denied ? "forbidden system call: " + run.message
                                                                      : how_it_ended(run);
        if (o.verdict == "runtime_error" && o.message.empty()) o.message = run.message;
        outcomes.push_back(std::move(o));
        break;
      } else {
        break;  // not reached: the runner stopped after a failure
      }
      if (!outcomes.back().passed && !options.run_all_tests) break;
    }
    return outcomes;
  }

  static std::string feedback(const tasks::Task& task, const std::vector<TestOutcome>& outcomes, std::size_t passed,
                              std::size_t total, const GradeOptions& options) {
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
        out << "Compile Error\n" << field(o.debug.empty() ? o.message : o.debug, kTracebackChars);
        break;  // every test fails the same way
      }
      if (o.verdict == "sandbox_error") {
        out << "Internal Error: the sandbox could not run the program (" << field(o.message) << ").";
        break;
      }
      out << "Test Case " << (i + 1) << ": " << title_of(o.verdict);
      if (o.verdict == "time_limit") out << " (limit " << options.per_test_timeout_s << " s CPU)";
      if (o.verdict == "memory_limit") out << " (limit " << options.memory_mb << " MB)";
      if (o.verdict == "output_limit") out << " (limit " << kStdoutCapText << " of output)";
      out << "\nInput:\n" << field(test.input);
      if (o.verdict == "runtime_error") {
        // The traceback (functional: the runner's; stdin: stderr), else how the process ended.
        const std::string trace = !o.error.empty() ? o.error : o.debug;
        if (!text::trim(trace).empty()) out << "\n" << field(trace, kTracebackChars);
        const bool quiet = text::trim(trace).empty();
        if (!o.message.empty() && (quiet || o.message.rfind("killed", 0) == 0 || trace.find("Traceback") == std::string::npos))
          out << "\n" << (quiet ? "No error output; the program " : "The program ")
              << (o.message.rfind("exit code", 0) == 0 ? "ended with " : "") << o.message << ".";
        else if (quiet)
          out << "\n(no error output)";
        if (!o.error.empty() && !text::trim(o.debug).empty()) out << "\nDebug Output:\n" << field(o.debug);
        if (!o.output.empty()) out << "\nOutput:\n" << field(o.output);
      } else if (o.verdict == "wrong_answer") {
        if (!o.error.empty()) {
          out << "\n" << field(o.error);
        } else {
          out << "\nOutput:\n" << (o.output.empty() ? "(empty)" : field(o.output));
        }
        out << "\nExpected:\n" << field(test.output);
        if (!text::trim(o.debug).empty()) out << "\nDebug Output:\n" << field(o.debug);
      } else {
        if (!o.message.empty() && o.verdict != "time_limit" && o.verdict != "memory_limit" && o.verdict != "output_limit")
          out << "\n(" << o.message << ")";
        if (!text::trim(o.output).empty()) out << "\nOutput:\n" << field(o.output);
        if (!text::trim(o.debug).empty()) out << "\nDebug Output:\n" << field(o.debug, kTracebackChars);
      }
    }
    out << "\n\nPassed " << passed << "/" << total << " tests";
    if (!options.run_all_tests && outcomes.size() < total) out << " (stopped at the first failure)";
    out << ".";
    return out.str();
  }
};

}  // namespace

std::unique_ptr<Grader> make_code_grader() { return std::make_unique<CodeGrader>(); }

}  // namespace distil::graders
