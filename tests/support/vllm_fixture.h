// vLLM's /v1/completions answer for a token-id prompt with prompt_logprobs k, in the shape its
// OpenAI server documents (vllm/entrypoints/openai/completion/protocol.py,
// CompletionResponseChoice.prompt_logprobs: list[dict[int, Logprob] | None]): one entry per
// prompt token, null for the first, else a map from token id to {"logprob", "rank",
// "decoded_token"} holding the k most likely tokens and, when it is not among them, the prompt's
// own token with its rank.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::testing {

// log-probs over the vocabulary of the token after `prefix`.
using NextTokenLogprobs = std::function<std::vector<double>(const std::vector<std::int64_t>& prefix)>;

inline nlohmann::json vllm_completion_reply(const std::string& model, const std::vector<std::int64_t>& prompt, int k,
                                            const NextTokenLogprobs& next) {
  using nlohmann::json;
  json positions = json::array();
  positions.push_back(nullptr);
  for (std::size_t j = 1; j < prompt.size(); ++j) {
    const std::vector<std::int64_t> prefix(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(j));
    const auto logp = next(prefix);
    std::vector<std::int64_t> order(logp.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return logp[a] > logp[b]; });
    std::vector<std::int64_t> rank(logp.size());
    for (std::size_t r = 0; r < order.size(); ++r) rank[order[r]] = static_cast<std::int64_t>(r) + 1;
    json entry = json::object();
    // The prompt's own token comes first, as vLLM builds the map; then the top-k by rank.
    const std::int64_t own = prompt[j];
    entry[std::to_string(own)] = {{"logprob", logp[own]}, {"rank", rank[own]}, {"decoded_token", "t" + std::to_string(own)}};
    for (int r = 0; r < k && r < static_cast<int>(order.size()); ++r) {
      const std::int64_t id = order[r];
      entry[std::to_string(id)] = {{"logprob", logp[id]}, {"rank", rank[id]}, {"decoded_token", "t" + std::to_string(id)}};
    }
    positions.push_back(std::move(entry));
  }
  json choice = {{"index", 0},
                 {"text", "x"},
                 {"logprobs", nullptr},
                 {"finish_reason", "length"},
                 {"stop_reason", nullptr},
                 {"prompt_logprobs", std::move(positions)},
                 {"prompt_token_ids", prompt}};
  return {{"id", "cmpl-fixture"},
          {"object", "text_completion"},
          {"created", 1764720000},
          {"model", model},
          {"choices", json::array({std::move(choice)})},
          {"usage", {{"prompt_tokens", prompt.size()}, {"total_tokens", prompt.size() + 1}, {"completion_tokens", 1}}}};
}

inline nlohmann::json vllm_models_reply(const std::string& model) {
  return {{"object", "list"},
          {"data", nlohmann::json::array({{{"id", model}, {"object", "model"}, {"owned_by", "vllm"}, {"max_model_len", 4096}}})}};
}

// vLLM's error body (ErrorResponse: {"error": {"message", "type", "param", "code"}}).
inline std::string vllm_error(const std::string& message, int code) {
  return nlohmann::json{{"error", {{"message", message}, {"type", "BadRequestError"}, {"param", nullptr}, {"code", code}}}}
      .dump();
}

}  // namespace distil::testing
