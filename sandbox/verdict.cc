// String and JSON forms of the public result types.
#include <stdexcept>

#include "sandbox/sandbox.h"

namespace distil::sandbox {
namespace {

// Program output is arbitrary bytes; JSON strings must be UTF-8. Invalid sequences become U+FFFD
// so serialising a result can never throw.
std::string utf8_or_replaced(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  const auto* s = reinterpret_cast<const unsigned char*>(in.data());
  const std::size_t n = in.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    std::size_t len = 0;
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3;
    else if (c >= 0xF0 && c <= 0xF4) len = 4;
    bool valid = len > 0 && i + len <= n;
    for (std::size_t k = 1; valid && k < len; ++k) valid = (s[i + k] & 0xC0) == 0x80;
    if (valid && len == 3) {
      if (c == 0xE0 && s[i + 1] < 0xA0) valid = false;  // overlong
      if (c == 0xED && s[i + 1] > 0x9F) valid = false;  // surrogate
    }
    if (valid && len == 4) {
      if (c == 0xF0 && s[i + 1] < 0x90) valid = false;  // overlong
      if (c == 0xF4 && s[i + 1] > 0x8F) valid = false;  // above U+10FFFF
    }
    if (valid) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace

std::string to_string(Verdict v) {
  switch (v) {
    case Verdict::ok: return "ok";
    case Verdict::runtime_error: return "runtime_error";
    case Verdict::time_limit: return "time_limit";
    case Verdict::memory_limit: return "memory_limit";
    case Verdict::output_limit: return "output_limit";
    case Verdict::sandbox_error: return "sandbox_error";
    case Verdict::syscall_denied: return "syscall_denied";
  }
  return "sandbox_error";
}

std::string to_string(Language l) {
  switch (l) {
    case Language::python: return "python";
    case Language::cpp: return "cpp";
  }
  return "python";
}

Language language_from_string(const std::string& s) {
  if (s == "python" || s == "python3" || s == "py") return Language::python;
  if (s == "cpp" || s == "c++" || s == "cxx") return Language::cpp;
  throw std::invalid_argument("language: unknown value '" + s + "' (expected python or cpp)");
}

nlohmann::json to_json(const RunResult& r) {
  return nlohmann::json{
      {"verdict", to_string(r.verdict)},
      {"exit_code", r.exit_code},
      {"signal", r.signal},
      {"stdout", utf8_or_replaced(r.stdout_data)},
      {"stderr", utf8_or_replaced(r.stderr_data)},
      {"stdout_truncated", r.stdout_truncated},
      {"stderr_truncated", r.stderr_truncated},
      {"compile_error", r.compile_error},
      {"cpu_time_s", r.cpu_time_s},
      {"wall_time_s", r.wall_time_s},
      {"peak_memory_kb", r.peak_memory_kb},
      {"message", utf8_or_replaced(r.message)},
      {"fork_server", r.fork_server},
      {"fork_server_id", r.fork_server_id},
      {"fork_server_batch", r.fork_server_batch},
  };
}

nlohmann::json to_json(const IsolationReport& r) {
  return nlohmann::json{
      {"user_namespace", r.user_namespace},   {"pid_namespace", r.pid_namespace},
      {"mount_namespace", r.mount_namespace}, {"network_namespace", r.network_namespace},
      {"ipc_namespace", r.ipc_namespace},     {"uts_namespace", r.uts_namespace},
      {"readonly_root", r.readonly_root},     {"seccomp", r.seccomp},
      {"rlimits", r.rlimits},                 {"cgroup", r.cgroup},
      {"no_new_privs", r.no_new_privs},       {"notes", r.notes},
  };
}

}  // namespace distil::sandbox
