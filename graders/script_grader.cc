// The `script` grader: a task-set author's Python `grade(task, response) -> dict` runs inside the
// sandbox, so a new domain needs no recompilation. The script comes from the task's
// metadata.script (inline source) or metadata.script_file (a relative path under the scripts
// directory, $DISTIL_GRADER_SCRIPTS or the working directory).
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "graders/builtin_graders.h"
#include "graders/text_util.h"

namespace distil::graders {
namespace {

constexpr std::size_t kMaxScriptBytes = 1 << 20;

constexpr const char* kHarness = R"PY(

# ---- distil script-grader harness ----
def _distil_run_script_grader():
    import sys as _sys, json as _json
    _out = _sys.stdout
    _sys.stdout = _sys.stderr
    _payload = _json.loads(_sys.stdin.read())
    _result = grade(_payload["task"], _payload["response"])
    _out.write("\n" + _json.dumps(_result) + "\n")
    _out.flush()
_distil_run_script_grader()
)PY";

std::string scripts_directory() {
  const char* dir = std::getenv("DISTIL_GRADER_SCRIPTS");
  return dir && *dir ? dir : ".";
}

std::string load_script(const tasks::Task& task) {
  auto inline_script = task.metadata.find("script");
  auto script_file = task.metadata.find("script_file");
  if (inline_script != task.metadata.end()) {
    if (!inline_script->is_string() || inline_script->get<std::string>().empty())
      throw tasks::TaskError("metadata.script", "must be a non-empty string of Python source");
    if (inline_script->get<std::string>().size() > kMaxScriptBytes) throw tasks::TaskError("metadata.script", "larger than 1 MiB");
    return inline_script->get<std::string>();
  }
  if (script_file == task.metadata.end())
    throw tasks::TaskError("metadata.script", "the script grader needs metadata.script or metadata.script_file");
  if (!script_file->is_string()) throw tasks::TaskError("metadata.script_file", "must be a string");
  const std::filesystem::path relative(script_file->get<std::string>());
  // Task files are hostile: a script path may not leave the scripts directory.
  if (relative.empty() || relative.is_absolute()) throw tasks::TaskError("metadata.script_file", "must be a relative path");
  for (const auto& part : relative) {
    if (part == "..") throw tasks::TaskError("metadata.script_file", "must not contain '..'");
  }
  if (relative.extension() != ".py") throw tasks::TaskError("metadata.script_file", "must name a .py file");
  const std::filesystem::path full = std::filesystem::path(scripts_directory()) / relative;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(full, ec))
    throw tasks::TaskError("metadata.script_file", "no such file under the scripts directory: " + relative.string());
  if (std::filesystem::file_size(full, ec) > kMaxScriptBytes) throw tasks::TaskError("metadata.script_file", "larger than 1 MiB");
  std::ifstream in(full, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

class ScriptGrader final : public Grader {
 public:
  std::string name() const override { return "script"; }
  std::string description() const override {
    return "A task set's own Python grade(task, response) -> {reward, feedback, ...}, run in the sandbox "
           "(metadata.script or metadata.script_file).";
  }
  bool needs_sandbox() const override { return true; }

  GradeResult grade(const tasks::Task& task, const std::string& response, const GradeOptions& options,
                    GradeContext& context) const override {
    sandbox::Program program;
    program.language = sandbox::Language::python;
    program.source = load_script(task) + kHarness;
    if (!context.sandbox) throw std::runtime_error("the script grader needs a sandbox and none is configured");
    nlohmann::json task_json = tasks::to_json(task);
    task_json["metadata"].erase("script");  // the script need not see itself
    const std::string payload =
        nlohmann::json{{"task", task_json}, {"response", response}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    sandbox::Limits limits;
    limits.cpu_time_s = options.per_test_timeout_s;
    limits.memory_mb = options.memory_mb;
    const sandbox::RunResult run = context.sandbox->run(program, payload, limits);

    GradeResult result;
    auto script_failed = [&](const std::string& why) {
      result.verdict = "sandbox_error";
      result.reward = 0.0;
      result.passed = false;
      result.feedback = "The task's grader script failed: " + why;
      result.informative = false;  // about the grader, not the response
      result.details = {{"script_stderr", text::truncate_utf8(run.stderr_data, 2000)}, {"script_verdict", sandbox::to_string(run.verdict)}};
      return result;
    };
    if (run.verdict != sandbox::Verdict::ok) {
      std::string why = sandbox::to_string(run.verdict);
      if (!run.stderr_data.empty()) why += "\n" + text::truncate_utf8(run.stderr_data, 1500);
      return script_failed(why);
    }
    std::string out = run.stdout_data;
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
    std::size_t nl = out.rfind('\n');
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(nl == std::string::npos ? out : out.substr(nl + 1));
    } catch (const std::exception&) {
      return script_failed("grade() did not return a JSON-serialisable dict");
    }
    if (!j.is_object()) return script_failed("grade() must return a dict");
    auto reward = j.find("reward");
    if (reward == j.end() || !reward->is_number()) return script_failed("the dict needs a numeric \"reward\"");
    const double r = reward->get<double>();
    if (!(r >= 0.0 && r <= 1.0)) return script_failed("\"reward\" must be between 0 and 1");
    result.reward = r;
    result.passed = r >= 1.0;
    if (auto p = j.find("passed"); p != j.end()) {
      if (!p->is_boolean()) return script_failed("\"passed\" must be a boolean");
      result.passed = p->get<bool>();
    }
    result.verdict = result.passed ? "accepted" : "wrong_answer";
    if (auto v = j.find("verdict"); v != j.end()) {
      static const std::vector<std::string> allowed = {"accepted", "wrong_answer", "runtime_error", "time_limit",
                                                       "memory_limit", "output_limit", "compile_error", "format_error"};
      if (!v->is_string() || std::find(allowed.begin(), allowed.end(), v->get<std::string>()) == allowed.end())
        return script_failed("\"verdict\" must be one of accepted, wrong_answer, format_error, ...");
      result.verdict = v->get<std::string>();
    }
    auto optional_string = [&](const char* key, std::string& into) {
      auto it = j.find(key);
      if (it == j.end()) return true;
      if (!it->is_string()) return false;
      into = it->get<std::string>();
      return true;
    };
    if (!optional_string("feedback", result.feedback)) return script_failed("\"feedback\" must be a string");
    if (!optional_string("extracted", result.extracted)) return script_failed("\"extracted\" must be a string");
    if (auto d = j.find("details"); d != j.end()) {
      if (!d->is_object()) return script_failed("\"details\" must be a dict");
      result.details = *d;
    }
    // A script that does not say: feedback on a failed response is taken to be informative.
    result.informative = !result.passed && !result.feedback.empty();
    if (auto inf = j.find("informative"); inf != j.end()) {
      if (!inf->is_boolean()) return script_failed("\"informative\" must be a boolean");
      result.informative = inf->get<bool>();
    }
    return result;
  }
};

}  // namespace

std::unique_ptr<Grader> make_script_grader() { return std::make_unique<ScriptGrader>(); }

}  // namespace distil::graders
