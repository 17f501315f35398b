// POST /run_code: SandboxFusion's code-running route (bytedance/SandboxFusion,
// sandbox/server/sandbox_api.py), field for field, so that a client written for SandboxFusion
// (verl's sandbox_fusion reward) can point at distil-env unchanged. python and cpp run in the
// sandbox; every other language gets SandboxFusion's own answer for it.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "env_server/api_error.h"
#include "sandbox/sandbox.h"

namespace distil::env {

// What the server allows a /run_code request (reported by GET /v1/limits as "run_code").
struct RunCodeLimits {
  double max_run_timeout_s = 30.0;      // run_timeout above this is lowered to it
  double max_compile_timeout_s = 30.0;  // compile_timeout above this is lowered to it
  std::size_t default_memory_mb = 1024;  // memory_limit_MB <= 0 (SandboxFusion's -1: no limit)
  std::size_t max_memory_mb = 4096;      // memory_limit_MB above this is lowered to it
  // SandboxFusion keeps the first 1 MiB of each stream (runners/base.py, _MAX_CAPTURED_OUTPUT_BYTES).
  std::size_t output_bytes = 1u << 20;
  std::size_t max_fetch_bytes = 16u << 20;  // all fetched files together
};
nlohmann::json to_json(const RunCodeLimits& l);

// One validated request. `run` false: the language is one SandboxFusion knows but this server
// does not run; the answer is then unsupported_language_response().
struct RunCodeJob {
  bool run = true;
  std::string language;
  std::string code_head;  // the code's first 100 characters, for the unsupported-language message
  sandbox::Program program;
  std::string stdin_data;  // null and absent are both empty: the program reads end of file
  sandbox::Limits limits;
};

// Validates a parsed request body. Throws ApiError (422, code "invalid_request", the field named
// as a JSON path, e.g. files["a.txt"]) whose run_code_error_body() is FastAPI's validation error
// shape plus ours.
RunCodeJob parse_run_code_request(const nlohmann::json& body, const RunCodeLimits& limits);

// SandboxFusion's RunCodeResponse for a finished run.
nlohmann::json run_code_response(const RunCodeJob& job, const sandbox::RunResult& result);

// What SandboxFusion answers for a language it lists but has no runner for: HTTP 200, status
// "SandboxError", the exception's text as the message.
nlohmann::json unsupported_language_response(const RunCodeJob& job);

// A SandboxError answer (the sandbox itself failed; HTTP 200, as SandboxFusion answers it).
nlohmann::json sandbox_error_response(const std::string& message);

// The body of an error answer on /run_code: FastAPI's {"detail": [{"type", "loc", "msg",
// "input"?}]} (what SandboxFusion's clients see for a request its model rejects) together with
// distil-env's {"error": {"code", "message", "field"}}.
nlohmann::json run_code_error_body(const ApiError& e);

// Standard base64 (RFC 4648 section 4, with padding).
std::string base64_encode(const std::string& bytes);
// Decodes standard base64; ASCII whitespace is ignored. False on anything else malformed.
bool base64_decode(const std::string& text, std::string& out);

}  // namespace distil::env
