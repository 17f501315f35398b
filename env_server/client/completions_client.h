// A remote teacher over the OpenAI-compatible completions API that vLLM and SGLang serve: the
// prompt goes as token ids with prompt_logprobs k, so every position of it comes back with its
// top-k log-probs, and nothing is generated but one token. Requests run concurrently over the
// pooled connections, retries and failover of http::Endpoints.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "env_server/client/http_endpoints.h"

namespace distil::http {

struct CompletionsConfig {
  // Base URLs ("http://host:8000", a trailing "/v1" is allowed), timeouts, retries; the health
  // path defaults to vLLM's and SGLang's "/health".
  EndpointsConfig endpoints;
  // The served model's name; empty: the first id GET /v1/models lists.
  std::string model;
  std::size_t max_concurrent_requests = 8;
};

// One position: (token id, log-prob) pairs, most likely first.
using TopKRow = std::vector<std::pair<std::int64_t, double>>;

class CompletionsClient {
 public:
  explicit CompletionsClient(CompletionsConfig config);
  ~CompletionsClient();
  CompletionsClient(const CompletionsClient&) = delete;
  CompletionsClient& operator=(const CompletionsClient&) = delete;

  // For each sequence s, the top-k distributions of s[j] given s[0..j) for j in [from[i],
  // s.size()): the teacher's view of a response that starts at `from`. One request per
  // sequence. Throws std::runtime_error naming the sequence and what went wrong (no usable
  // answer after retries, an HTTP error with the server's message, a malformed reply).
  std::vector<std::vector<TopKRow>> prompt_topk(const std::vector<std::vector<std::int64_t>>& sequences,
                                                const std::vector<std::size_t>& from, int k);

  // The model name sent (resolved from /v1/models on first use when not configured).
  std::string model();
  const Endpoints& endpoints() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The body of POST /v1/completions for one sequence (exposed for tests).
nlohmann::json completions_request(const std::string& model, const std::vector<std::int64_t>& sequence, int k);

// Reads choices[0].prompt_logprobs of a completions reply: a list with one entry per prompt
// token (the first null), each a map from token id (as a string) to {"logprob", "rank",
// "decoded_token"} holding the top-k and, when it is not among them, the prompt's own token.
// Returns the k most likely at positions [from, sequence_length), most likely first (ties: lower
// rank, then lower id). Throws std::runtime_error naming the field and the problem.
std::vector<TopKRow> parse_prompt_logprobs(const nlohmann::json& reply, std::size_t sequence_length, std::size_t from,
                                           int k);

// The message of an OpenAI-style error body ({"error": {"message"}} or {"object": "error",
// "message"}), else the body as one line.
std::string openai_error_message(const std::string& body);

}  // namespace distil::http
