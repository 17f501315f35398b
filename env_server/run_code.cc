#include "env_server/run_code.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>

namespace distil::env {

using nlohmann::json;

namespace {

// SandboxFusion's `Language` (sandbox/runners/types.py), in its order: what its request model
// accepts. A name outside it is a validation error there (422); one inside it that distil-env
// does not run gets the answer SandboxFusion gives for a language without a runner.
constexpr std::array<const char*, 29> kSandboxFusionLanguages = {
    "python", "cpp",  "nodejs", "go",    "go_test", "java",  "php",   "csharp",        "bash", "typescript",
    "sql",    "rust", "cuda",   "lua",   "R",       "perl",  "D_ut",  "ruby",          "scala", "julia",
    "pytest", "junit", "kotlin_script", "jest", "verilog", "python_gpu", "lean", "swift", "racket"};

// A validation failure in FastAPI's terms: `loc` after "body", pydantic's error type.
[[noreturn]] void reject(const std::string& field, json loc, const std::string& type, const std::string& message,
                         const json* input = nullptr) {
  ApiError e(422, "invalid_request", field, field + ": " + message);
  e.with("loc", std::move(loc)).with("type", type);
  if (input) e.with("input", *input);
  throw e;
}

std::string quoted_key(const std::string& key) { return json(key).dump(); }

double timeout_field(const json& body, const char* name, double fallback, double cap) {
  auto it = body.find(name);
  if (it == body.end()) return std::min(fallback, cap);
  if (!it->is_number() || it->is_boolean())
    reject(name, json::array({name}), "float_type", "must be a number of seconds, not " + std::string(it->type_name()),
           &*it);
  const double v = it->get<double>();
  if (!std::isfinite(v) || v <= 0)
    reject(name, json::array({name}), "greater_than", "must be more than 0 seconds (got " + it->dump() + ")", &*it);
  return std::min(v, cap);
}

}  // namespace

json to_json(const RunCodeLimits& l) {
  return {{"max_run_timeout_s", l.max_run_timeout_s},
          {"max_compile_timeout_s", l.max_compile_timeout_s},
          {"default_memory_mb", l.default_memory_mb},
          {"max_memory_mb", l.max_memory_mb},
          {"output_bytes", l.output_bytes},
          {"max_fetch_bytes", l.max_fetch_bytes}};
}

RunCodeJob parse_run_code_request(const json& body, const RunCodeLimits& limits) {
  if (!body.is_object())
    reject("body", json::array(), "model_attributes_type", "the request body must be a JSON object", &body);
  RunCodeJob job;

  auto code = body.find("code");
  if (code == body.end()) reject("code", json::array({"code"}), "missing", "is required (the program's source)");
  if (!code->is_string())
    reject("code", json::array({"code"}), "string_type", "must be a string, not " + std::string(code->type_name()), &*code);
  job.program.source = code->get<std::string>();
  job.code_head = job.program.source.substr(0, 100);

  auto language = body.find("language");
  if (language == body.end())
    reject("language", json::array({"language"}), "missing", "is required (\"python\" or \"cpp\")");
  if (!language->is_string())
    reject("language", json::array({"language"}), "literal_error",
           "must be a string naming the language, not " + std::string(language->type_name()), &*language);
  job.language = language->get<std::string>();
  const bool known = std::any_of(kSandboxFusionLanguages.begin(), kSandboxFusionLanguages.end(),
                                 [&](const char* l) { return job.language == l; });
  if (!known) {
    // pydantic's message for a Literal: "Input should be 'python', 'cpp', ... or 'racket'".
    std::string expected;
    for (std::size_t i = 0; i < kSandboxFusionLanguages.size(); ++i) {
      if (i) expected += i + 1 == kSandboxFusionLanguages.size() ? " or " : ", ";
      expected += std::string("'") + kSandboxFusionLanguages[i] + "'";
    }
    reject("language", json::array({"language"}), "literal_error",
           "Input should be " + expected + " (distil-env runs 'python' and 'cpp')", &*language);
  }
  if (job.language == "python") job.program.language = sandbox::Language::python;
  else if (job.language == "cpp") job.program.language = sandbox::Language::cpp;
  else job.run = false;

  auto stdin_data = body.find("stdin");
  if (stdin_data != body.end() && !stdin_data->is_null()) {
    if (!stdin_data->is_string())
      reject("stdin", json::array({"stdin"}), "string_type",
             "must be a string or null, not " + std::string(stdin_data->type_name()), &*stdin_data);
    job.stdin_data = stdin_data->get<std::string>();
  }

  // run_timeout bounds the program's CPU time (the sandbox's verdict); its wall-clock limit is
  // the sandbox's usual 2 x CPU + 1 s, so a program that sleeps or blocks is stopped too.
  job.limits.cpu_time_s = timeout_field(body, "run_timeout", 10, limits.max_run_timeout_s);
  job.limits.compile_cpu_time_s = timeout_field(body, "compile_timeout", 10, limits.max_compile_timeout_s);

  job.limits.memory_mb = limits.default_memory_mb;
  if (auto memory = body.find("memory_limit_MB"); memory != body.end()) {
    if (!memory->is_number() || memory->is_boolean())
      reject("memory_limit_MB", json::array({"memory_limit_MB"}), "int_type",
             "must be an integer number of megabytes, not " + std::string(memory->type_name()), &*memory);
    const double mb = memory->get<double>();
    if (!std::isfinite(mb) || mb != std::floor(mb))
      reject("memory_limit_MB", json::array({"memory_limit_MB"}), "int_from_float",
             "must be an integer number of megabytes (got " + memory->dump() + ")", &*memory);
    if (mb > 0 && mb < 16)
      reject("memory_limit_MB", json::array({"memory_limit_MB"}), "greater_than_equal",
             "must be at least 16 (the sandbox's smallest limit), or -1 for the server's default (got " +
                 memory->dump() + ")",
             &*memory);
    // SandboxFusion's -1 (any value <= 0) means no limit of its own; here the server's default.
    if (mb > 0) job.limits.memory_mb = static_cast<std::size_t>(std::min<double>(mb, static_cast<double>(limits.max_memory_mb)));
  }
  job.limits.output_bytes = limits.output_bytes;
  job.limits.stderr_bytes = limits.output_bytes;

  if (auto files = body.find("files"); files != body.end() && !files->is_null()) {
    if (!files->is_object())
      reject("files", json::array({"files"}), "dict_type",
             "must be an object from relative path to base64 content, not " + std::string(files->type_name()), &*files);
    for (const auto& [path, content] : files->items()) {
      const std::string field = "files[" + quoted_key(path) + "]";
      const json loc = json::array({"files", path});
      // As SandboxFusion's restore_files(): a null content, or a name containing
      // IGNORE_THIS_FILE, is skipped.
      if (content.is_null() || path.find("IGNORE_THIS_FILE") != std::string::npos) continue;
      if (!content.is_string())
        reject(field, loc, "string_type", "must be base64 text or null, not " + std::string(content.type_name()), &content);
      if (auto why = sandbox::work_path_problem(path); !why.empty()) reject(field, loc, "value_error", why);
      std::string bytes;
      if (!base64_decode(content.get<std::string>(), bytes))
        reject(field, loc, "value_error", "is not valid base64 (standard alphabet, padded with '=')");
      job.program.files.push_back({path, std::move(bytes)});
    }
  }

  if (auto fetch = body.find("fetch_files"); fetch != body.end() && !fetch->is_null()) {
    if (!fetch->is_array())
      reject("fetch_files", json::array({"fetch_files"}), "list_type",
             "must be a list of relative paths, not " + std::string(fetch->type_name()), &*fetch);
    std::set<std::string> seen;
    for (std::size_t i = 0; i < fetch->size(); ++i) {
      const json& path = (*fetch)[i];
      const std::string field = "fetch_files[" + std::to_string(i) + "]";
      const json loc = json::array({"fetch_files", i});
      if (!path.is_string())
        reject(field, loc, "string_type", "must be a string, not " + std::string(path.type_name()), &path);
      const std::string p = path.get<std::string>();
      if (auto why = sandbox::work_path_problem(p); !why.empty()) reject(field, loc, "value_error", why, &path);
      if (seen.insert(p).second) job.program.fetch_files.push_back(p);
    }
  }
  job.program.fetch_max_bytes = limits.max_fetch_bytes;

  // SandboxFusion passes `args` to pytest only; its python and cpp runners ignore them. Checked
  // for its type, then ignored the same way.
  if (auto args = body.find("args"); args != body.end() && !args->is_null()) {
    if (!args->is_array())
      reject("args", json::array({"args"}), "list_type", "must be a list of strings, not " + std::string(args->type_name()),
             &*args);
    for (std::size_t i = 0; i < args->size(); ++i)
      if (!(*args)[i].is_string())
        reject("args[" + std::to_string(i) + "]", json::array({"args", i}), "string_type", "must be a string",
               &(*args)[i]);
  }
  return job;
}

namespace {

// SandboxFusion's CommandRunResult: status "Finished" | "Error" | "TimeLimitExceeded",
// execution_time (wall seconds), return_code (null unless the command finished; negative for a
// signal, as asyncio reports it), stdout, stderr.
json command_result(sandbox::Verdict verdict, int exit_code, int signal, const std::string& out, const std::string& err,
                    double wall_s, const std::string& message) {
  using sandbox::Verdict;
  if (verdict == Verdict::sandbox_error)
    return {{"status", "Error"}, {"execution_time", nullptr}, {"return_code", nullptr}, {"stdout", nullptr},
            {"stderr", message}};
  if (verdict == Verdict::time_limit)
    return {{"status", "TimeLimitExceeded"}, {"execution_time", wall_s}, {"return_code", nullptr}, {"stdout", out},
            {"stderr", err}};
  std::string stderr_text = err;
  // Why the sandbox stopped it, where the program's own output cannot say (SandboxFusion would
  // have let it go on).
  if (verdict == Verdict::syscall_denied || verdict == Verdict::output_limit) {
    if (!stderr_text.empty() && stderr_text.back() != '\n') stderr_text += '\n';
    stderr_text += "[distil-env sandbox] " + message + "\n";
  }
  return {{"status", "Finished"},
          {"execution_time", wall_s},
          {"return_code", signal != 0 ? -signal : exit_code},
          {"stdout", out},
          {"stderr", std::move(stderr_text)}};
}

// SandboxFusion's parse_run_status(): Error in either step -> SandboxError (message: that step's
// stderr); a time limit or a non-zero return code -> Failed; otherwise Success.
void set_overall_status(json& response) {
  std::vector<const json*> steps;
  for (const char* name : {"compile_result", "run_result"})
    if (!response[name].is_null()) steps.push_back(&response[name]);
  for (const json* s : steps)
    if ((*s)["status"] == "Error") {
      response["status"] = "SandboxError";
      response["message"] = (*s)["stderr"].is_string() ? (*s)["stderr"] : json("");
      return;
    }
  for (const json* s : steps)
    if ((*s)["status"] == "TimeLimitExceeded" || ((*s)["return_code"].is_number() && (*s)["return_code"] != 0)) {
      response["status"] = "Failed";
      return;
    }
  response["status"] = "Success";
}

json empty_response() {
  return {{"status", "Success"}, {"message", ""},         {"compile_result", nullptr}, {"run_result", nullptr},
          {"executor_pod_name", nullptr}, {"files", json::object()}};
}

}  // namespace

json run_code_response(const RunCodeJob& job, const sandbox::RunResult& r) {
  json response = empty_response();
  if (job.program.language == sandbox::Language::cpp) {
    if (!r.compile.ran) return sandbox_error_response(r.message.empty() ? "the C++ build could not start" : r.message);
    const auto& c = r.compile;
    response["compile_result"] =
        command_result(c.verdict, c.exit_code, c.signal, c.stdout_data, c.stderr_data, c.wall_time_s, r.message);
    // SandboxFusion runs the program only after a compile that finished with return code 0.
    if (c.verdict == sandbox::Verdict::ok)
      response["run_result"] =
          command_result(r.verdict, r.exit_code, r.signal, r.stdout_data, r.stderr_data, r.wall_time_s, r.message);
  } else {
    response["run_result"] =
        command_result(r.verdict, r.exit_code, r.signal, r.stdout_data, r.stderr_data, r.wall_time_s, r.message);
  }
  for (const auto& f : r.files) response["files"][f.path] = base64_encode(f.content);
  set_overall_status(response);
  return response;
}

json unsupported_language_response(const RunCodeJob& job) {
  // SandboxFusion: CODE_RUNNERS[language] raises KeyError, caught as
  // f'exception on running code {code}: {e} ...' with status SandboxError.
  json response = empty_response();
  response["status"] = "SandboxError";
  response["message"] = "exception on running code " + job.code_head + ": '" + job.language +
                        "' (distil-env runs only python and cpp)";
  return response;
}

json sandbox_error_response(const std::string& message) {
  json response = empty_response();
  response["status"] = "SandboxError";
  response["message"] = message;
  return response;
}

json run_code_error_body(const ApiError& e) {
  json body = e.to_json();
  json& error = body["error"];
  const bool unparsable = e.code() == "malformed_json" || e.code() == "invalid_utf8";
  json item = {{"type", error.value("type", unparsable ? "json_invalid" : "value_error")}, {"loc", json::array({"body"})}, {"msg", e.what()}};
  if (auto loc = error.find("loc"); loc != error.end())
    for (const auto& part : *loc) item["loc"].push_back(part);
  if (auto input = error.find("input"); input != error.end()) item["input"] = *input;
  error.erase("loc");
  error.erase("type");
  error.erase("input");
  body["detail"] = json::array({std::move(item)});
  return body;
}

std::string base64_encode(const std::string& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(bytes[i]) << 16) | (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < bytes.size()) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

bool base64_decode(const std::string& text, std::string& out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string clean;
  clean.reserve(text.size());
  for (char c : text)
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t' && c != '\f' && c != '\v') clean += c;
  if (clean.size() % 4 != 0) return false;
  out.clear();
  out.reserve(clean.size() / 4 * 3);
  for (std::size_t i = 0; i < clean.size(); i += 4) {
    const bool last = i + 4 == clean.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = clean[i + k];
      if (c == '=' && last && k >= 2) {
        ++pad;
        v[k] = 0;
        continue;
      }
      if (pad) return false;  // data after '='
      v[k] = value(c);
      if (v[k] < 0) return false;
    }
    const unsigned bits = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>((bits >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((bits >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(bits & 0xff);
  }
  return true;
}

}  // namespace distil::env
