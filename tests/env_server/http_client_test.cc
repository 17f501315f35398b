// The HTTP client layer: the one URL parser, and the OpenAI-compatible completions client of
// remote teachers against a fixture server answering in vLLM's documented shape.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>

#include "env_server/client/completions_client.h"
#include "env_server/client/url.h"
#include "tests/support/fixture_http_server.h"
#include "tests/support/vllm_fixture.h"

namespace distil::http {
namespace {

using nlohmann::json;
using testing::FixtureHttpServer;
using testing::FixtureRequest;
using testing::FixtureResponse;

std::string url_error(const std::string& url, bool allow_path = false) {
  try {
    parse_http_url(url, "teacher.remote_url", allow_path);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(ParseHttpUrl, HostsPortsAndIpv6) {
  auto a = parse_http_url("http://127.0.0.1:8080", "f", false);
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, "8080");
  EXPECT_EQ(a.path, "");
  EXPECT_EQ(a.base(), "http://127.0.0.1:8080");
  auto b = parse_http_url("http://[::1]:9000/", "f", false);
  EXPECT_EQ(b.host, "::1");
  EXPECT_EQ(b.port, "9000");
  EXPECT_EQ(b.base(), "http://[::1]:9000");
  auto c = parse_http_url("teacher.internal", "f", false);
  EXPECT_EQ(c.host, "teacher.internal");
  EXPECT_EQ(c.port, "80");
  auto d = parse_http_url("http://h:1/v1/score/", "f", true);
  EXPECT_EQ(d.path, "/v1/score");
  EXPECT_EQ(parse_http_url("http://[2001:db8::5]", "f", false).port, "80");
}

TEST(ParseHttpUrl, BadUrlsNameTheFieldAndTheProblem) {
  EXPECT_NE(url_error("https://h:443").find("teacher.remote_url: 'https://h:443': only http://"), std::string::npos);
  EXPECT_NE(url_error("http://h:1/x").find("without a path"), std::string::npos);
  EXPECT_EQ(url_error("http://h:1/x", true), "");
  EXPECT_NE(url_error("http://h:0").find("bad port '0'"), std::string::npos);
  EXPECT_NE(url_error("http://h:65536").find("bad port"), std::string::npos);
  EXPECT_NE(url_error("http://h:80x").find("bad port"), std::string::npos);
  EXPECT_NE(url_error("http://h:").find("bad port ''"), std::string::npos);
  EXPECT_NE(url_error("http://::1:80").find("must be in brackets"), std::string::npos);
  EXPECT_NE(url_error("http://[::1").find("unterminated"), std::string::npos);
  EXPECT_NE(url_error("http://:80").find("no host"), std::string::npos);
  EXPECT_NE(url_error("http://h:80?a=1", true).find("query"), std::string::npos);
  EXPECT_NE(url_error("http://h :80").find("space"), std::string::npos);
  EXPECT_NE(url_error("http://u:p@h:80").find("user information"), std::string::npos);
  EXPECT_NE(url_error("").find("empty"), std::string::npos);
}

// A deterministic "model" over a 50-token vocabulary: log-softmax of a hash of the prefix.
constexpr int kVocab = 50;
std::vector<double> hashed_logprobs(const std::vector<std::int64_t>& prefix) {
  std::uint64_t h = 1469598103934665603ull;
  for (auto t : prefix) h = (h ^ static_cast<std::uint64_t>(t)) * 1099511628211ull;
  std::vector<double> logits(kVocab);
  for (int v = 0; v < kVocab; ++v) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    logits[v] = static_cast<double>(h >> 40) / static_cast<double>(1ull << 24) * 6.0;
  }
  double m = *std::max_element(logits.begin(), logits.end()), z = 0;
  for (double l : logits) z += std::exp(l - m);
  for (double& l : logits) l = l - m - std::log(z);
  return logits;
}

TEST(PromptLogprobs, TopKIsTakenFromVllmsMapIncludingThePromptsOwnToken) {
  const std::vector<std::int64_t> seq = {3, 17, 42, 8, 8, 1};
  const json reply = testing::vllm_completion_reply("m", seq, 5, hashed_logprobs);
  const auto rows = parse_prompt_logprobs(reply, seq.size(), 2, 5);
  ASSERT_EQ(rows.size(), 4u);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const std::size_t j = r + 2;
    const auto logp = hashed_logprobs({seq.begin(), seq.begin() + static_cast<std::ptrdiff_t>(j)});
    std::vector<int> order(kVocab);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logp[a] > logp[b]; });
    ASSERT_EQ(rows[r].size(), 5u);
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(rows[r][i].first, order[i]) << "position " << j;
      EXPECT_DOUBLE_EQ(rows[r][i].second, logp[order[i]]);
    }
  }
}

std::string prompt_logprobs_error(json reply, std::size_t length, std::size_t from, int k) {
  try {
    parse_prompt_logprobs(reply, length, from, k);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(PromptLogprobs, MalformedRepliesNameTheField) {
  const std::vector<std::int64_t> seq = {3, 17, 42};
  const json good = testing::vllm_completion_reply("m", seq, 2, hashed_logprobs);
  EXPECT_EQ(prompt_logprobs_error(good, 3, 1, 2), "");
  EXPECT_NE(prompt_logprobs_error(json::array(), 3, 1, 2).find("<root>"), std::string::npos);
  json no_choices = good;
  no_choices.erase("choices");
  EXPECT_NE(prompt_logprobs_error(no_choices, 3, 1, 2).find("choices: missing"), std::string::npos);
  json no_logprobs = good;
  no_logprobs["choices"][0].erase("prompt_logprobs");
  EXPECT_NE(prompt_logprobs_error(no_logprobs, 3, 1, 2).find("does the server support prompt_logprobs"),
            std::string::npos);
  EXPECT_NE(prompt_logprobs_error(good, 4, 1, 2).find("has 3 entries for a prompt of 4 tokens"), std::string::npos);
  EXPECT_NE(prompt_logprobs_error(good, 3, 1, 9).find("were asked for"), std::string::npos);
  json bad_key = good;
  bad_key["choices"][0]["prompt_logprobs"][1]["abc"] = {{"logprob", -1.0}};
  EXPECT_NE(prompt_logprobs_error(bad_key, 3, 1, 2).find("prompt_logprobs[1]: key 'abc' is not a token id"),
            std::string::npos);
  json positive = good;
  positive["choices"][0]["prompt_logprobs"][2]["7"] = {{"logprob", 0.5}};
  EXPECT_NE(prompt_logprobs_error(positive, 3, 1, 2).find("must be <= 0"), std::string::npos);
  json first_null_only = good;
  first_null_only["choices"][0]["prompt_logprobs"][1] = nullptr;
  EXPECT_NE(prompt_logprobs_error(first_null_only, 3, 1, 2).find("prompt_logprobs[1]: expected a map"),
            std::string::npos);
}

EndpointsConfig endpoints_for(std::vector<std::string> urls) {
  EndpointsConfig e;
  e.field = "teacher.remote_url";
  e.urls = std::move(urls);
  e.request_timeout_s = 30;
  e.backoff_initial_s = 0.01;
  e.log = [](const std::string&) {};
  return e;
}

// A vLLM stand-in: /health, /v1/models, /v1/completions with prompt_logprobs.
struct VllmFixture {
  std::mutex mutex;
  std::vector<json> completions;  // requests received
  FixtureHttpServer server{[this](const FixtureRequest& r) { return answer(r); }};
  int fail_first = 0;             // answer this many completions with 503 first
  int hold_until_in_flight = 0;   // hold completions until this many were in flight at once (or 5 s)
  std::condition_variable released;
  int in_flight = 0;
  bool reached = false;

  FixtureResponse answer(const FixtureRequest& r) {
    if (r.target == "/health") return {200, ""};
    if (r.method == "GET" && r.target == "/v1/models") return {200, testing::vllm_models_reply("qwen3-fixture").dump()};
    if (r.method != "POST" || r.target != "/v1/completions") return {404, "{\"detail\":\"Not Found\"}"};
    const json request = json::parse(r.body);
    {
      std::unique_lock lock(mutex);
      completions.push_back(request);
      if (fail_first > 0) {
        --fail_first;
        return {503, testing::vllm_error("the engine is busy", 503)};
      }
      reached |= ++in_flight >= hold_until_in_flight;
      released.notify_all();
      released.wait_for(lock, std::chrono::seconds(5), [&] { return reached; });
    }
    const int k = request.at("prompt_logprobs").get<int>();
    if (k > 20) {
      std::lock_guard lock(mutex);
      --in_flight;
      return {400, testing::vllm_error("Requested prompt logprobs of " + std::to_string(k) +
                                           ", which is greater than max allowed: 20", 400)};
    }
    auto reply = testing::vllm_completion_reply(request.value("model", ""), request.at("prompt").get<std::vector<std::int64_t>>(),
                                                k, hashed_logprobs);
    std::lock_guard lock(mutex);
    --in_flight;
    return {200, reply.dump()};
  }
};

TEST(CompletionsClient, AsksForPromptLogprobsAndReadsTheResponsePositions) {
  VllmFixture vllm;
  CompletionsConfig config;
  config.endpoints = endpoints_for({vllm.server.url() + "/v1"});  // an OpenAI client's base URL
  CompletionsClient client(config);
  const std::vector<std::vector<std::int64_t>> sequences = {{1, 2, 3, 4, 5}, {9, 8, 7}};
  const auto rows = client.prompt_topk(sequences, {3, 1}, 4);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].size(), 2u);
  EXPECT_EQ(rows[1].size(), 2u);
  EXPECT_EQ(client.model(), "qwen3-fixture");  // resolved from /v1/models
  ASSERT_EQ(vllm.completions.size(), 2u);
  for (const auto& request : vllm.completions) {
    EXPECT_EQ(request.at("model"), "qwen3-fixture");
    EXPECT_EQ(request.at("prompt_logprobs"), 4);
    EXPECT_EQ(request.at("max_tokens"), 1);
    EXPECT_EQ(request.at("add_special_tokens"), false);
  }
  EXPECT_EQ(parse_prompt_logprobs(testing::vllm_completion_reply("m", sequences[0], 4, hashed_logprobs), 5, 3, 4),
            rows[0]);
}

TEST(CompletionsClient, RequestsRunConcurrently) {
  VllmFixture vllm;
  vllm.hold_until_in_flight = 4;  // every request waits until four are being served at once
  CompletionsConfig config;
  config.endpoints = endpoints_for({vllm.server.url()});
  config.model = "qwen3-fixture";
  config.max_concurrent_requests = 4;
  CompletionsClient client(config);
  std::vector<std::vector<std::int64_t>> sequences(8, {1, 2, 3});
  client.prompt_topk(sequences, std::vector<std::size_t>(8, 1), 2);
  EXPECT_GE(vllm.server.max_in_flight(), 4);
  EXPECT_LE(vllm.server.max_in_flight(), 4);
}

TEST(CompletionsClient, FailsOverFromADeadReplicaAndRetriesThrough503) {
  VllmFixture vllm;
  vllm.fail_first = 2;
  std::string dead;
  {
    FixtureHttpServer closed([](const FixtureRequest&) { return FixtureResponse{}; });
    dead = closed.url();
  }  // its port is closed now
  CompletionsConfig config;
  config.endpoints = endpoints_for({dead, vllm.server.url()});
  config.model = "m";
  CompletionsClient client(config);
  const auto rows = client.prompt_topk({{4, 5, 6}}, {1}, 3);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].size(), 2u);
  EXPECT_EQ(vllm.completions.size(), 3u);  // two 503s, then the answer
  const auto stats = client.endpoints().stats();
  EXPECT_TRUE(stats[0].down);
  EXPECT_GE(stats[0].failures, 1);
}

TEST(CompletionsClient, TheServersOwnErrorMessageSurfaces) {
  VllmFixture vllm;
  CompletionsConfig config;
  config.endpoints = endpoints_for({vllm.server.url()});
  config.model = "m";
  CompletionsClient client(config);
  try {
    client.prompt_topk({{1, 2, 3}}, {1}, 30);
    FAIL() << "a 400 must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 400: Requested prompt logprobs of 30, which is greater than max allowed: 20"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(vllm.completions.size(), 1u);  // the request's own fault: not retried
}

TEST(CompletionsClient, AServerThatIsNotOpenAIsIsAnEndpointFault) {
  FixtureHttpServer web([](const FixtureRequest&) { return FixtureResponse{404, "<html>Not Found</html>", "text/html"}; });
  CompletionsConfig config;
  config.endpoints = endpoints_for({web.url()});
  config.endpoints.max_attempts = 2;
  config.model = "m";
  CompletionsClient client(config);
  try {
    client.prompt_topk({{1, 2, 3}}, {1}, 2);
    FAIL() << "must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("gave up after 2 attempts"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("HTTP 404: Not Found"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace distil::http
