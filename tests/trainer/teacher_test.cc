// Teacher context construction and the validation of a remote teacher's reply.
#include <gtest/gtest.h>

#include <mutex>

#include "tests/support/fixture_http_server.h"
#include "tests/support/vllm_fixture.h"
#include "trainer/config.h"
#include "trainer/model/model.h"
#include "trainer/teacher.h"

namespace distil::trainer {
namespace {

TEST(StripReasoning, RemovesThinkBlocksAndUnclosedTails) {
  EXPECT_EQ(strip_reasoning("<think>hmm</think>\n\nThe answer is 4."), "The answer is 4.");
  EXPECT_EQ(strip_reasoning("a<think>x</think>b<think>y</think>c"), "abc");
  EXPECT_EQ(strip_reasoning("start <think>never closed"), "start");
}

// Qwen3's template opens <think> itself, so the response starts inside the block: a lone </think>
// ends the reasoning, and only what follows it is the solution.
TEST(StripReasoning, LeadingLoneCloseTagEndsTheReasoning) {
  EXPECT_EQ(strip_reasoning("Let me try 2+2.\n</think>\n\nThe answer is 4."), "The answer is 4.");
  EXPECT_EQ(strip_reasoning("</think>\\boxed{4}"), "\\boxed{4}");
  EXPECT_EQ(strip_reasoning("hmm</think>a<think>x</think>b"), "ab");
  EXPECT_EQ(strip_reasoning("hmm</think>a <think>cut"), "a");
}

TEST(FillTemplate, SubstitutedTextIsNotExpandedAgain) {
  EXPECT_EQ(fill_template("{prompt}|{feedback}", {{"prompt", "p {feedback}"}, {"feedback", "F"}}), "p {feedback}|F");
  EXPECT_EQ(fill_template("{unknown}", {{"prompt", "x"}}), "{unknown}");
}

TEST(TeacherMessage, SiblingSolutionThenFeedbackThenMasked) {
  const auto config = load_config_text("").teacher;
  std::vector<RolloutView> group = {{false, "wrong", "no \\boxed{} found"},
                                    {true, "<think>t</think>\\boxed{4}", ""},
                                    {true, "\\boxed{4} again", ""},
                                    {false, "also wrong", ""}};
  auto m0 = teacher_message(config, "feedback", "2+2?", group, 0, std::nullopt);
  ASSERT_TRUE(m0);
  EXPECT_EQ(*m0, "2+2?\nCorrect solution:\n\n\\boxed{4}\n\n\n\nCorrectly solve the original question.");
  // A successful rollout learns from the first *other* success.
  auto m1 = teacher_message(config, "feedback", "2+2?", group, 1, std::nullopt);
  ASSERT_TRUE(m1);
  EXPECT_NE(m1->find("\\boxed{4} again"), std::string::npos);
  // Without any success: the rollout's own feedback, and none -> masked.
  std::vector<RolloutView> failing = {{false, "a", "Runtime Error"}, {false, "b", ""}};
  auto f0 = teacher_message(config, "feedback", "q", failing, 0, std::nullopt);
  ASSERT_TRUE(f0);
  EXPECT_EQ(*f0, "q\nThe following is feedback from your unsuccessful earlier attempt:\n\nRuntime Error\n\n\n\n"
                 "Correctly solve the original question.");
  EXPECT_FALSE(teacher_message(config, "feedback", "q", failing, 1, std::nullopt));
  // Reference mode uses only the reference.
  auto r = teacher_message(config, "reference", "q", failing, 1, std::string("ref"));
  ASSERT_TRUE(r);
  EXPECT_NE(r->find("Reference solution:\n\nref"), std::string::npos);
  EXPECT_FALSE(teacher_message(config, "reference", "q", failing, 1, std::nullopt));
}

// The call site: a Qwen3 sibling's response, which starts inside the template's <think>, reaches
// the teacher without its reasoning.
TEST(TeacherMessage, SiblingThatStartsInsideThinkLosesItsReasoning) {
  const auto config = load_config_text("").teacher;
  const std::vector<RolloutView> group = {{false, "wrong", "no \\boxed{} found"},
                                          {true, "2+2 is 4, I am sure.\n</think>\n\n\\boxed{4}", ""}};
  auto m0 = teacher_message(config, "feedback", "2+2?", group, 0, std::nullopt);
  ASSERT_TRUE(m0);
  EXPECT_EQ(*m0, "2+2?\nCorrect solution:\n\n\\boxed{4}\n\n\n\nCorrectly solve the original question.");
}

TEST(TeacherContext, PassedRolloutWithoutPassedSiblingIsMaskedByDefault) {
  auto config = load_config_text("").teacher;
  const std::vector<RolloutView> alone = {{true, "\\boxed{4}", "Correct.", false}, {false, "\\boxed{5}", "", false}};
  const auto masked = teacher_context(config, "feedback", "2+2?", alone, 0, std::nullopt);
  EXPECT_EQ(masked.kind, ContextKind::masked);
  EXPECT_FALSE(masked.message);
  // Never the grader's "Correct." in the unsuccessful-attempt template, under any option.
  config.uninformative_feedback = "use";
  EXPECT_EQ(teacher_context(config, "feedback", "2+2?", alone, 0, std::nullopt).kind, ContextKind::masked);
  config.passed_without_sibling = "own_response";
  const auto own = teacher_context(config, "feedback", "2+2?", alone, 0, std::nullopt);
  EXPECT_EQ(own.kind, ContextKind::own_response);
  ASSERT_TRUE(own.message);
  EXPECT_EQ(*own.message, "2+2?\nCorrect solution:\n\n\\boxed{4}\n\n\n\nCorrectly solve the original question.");
  EXPECT_EQ(own.message->find("unsuccessful"), std::string::npos);
}

TEST(TeacherContext, UninformativeFeedbackIsMaskedUnlessAskedFor) {
  auto config = load_config_text("").teacher;
  const std::vector<RolloutView> group = {{false, "\\boxed{84}", "The final answer 84 is incorrect.", false},
                                          {false, "x = 1", "Test Case 1: Wrong Answer\nInput: 3\nOutput: 4\nExpected: 6", true}};
  EXPECT_EQ(teacher_context(config, "feedback", "q", group, 0, std::nullopt).kind, ContextKind::masked);
  const auto rich = teacher_context(config, "feedback", "q", group, 1, std::nullopt);
  EXPECT_EQ(rich.kind, ContextKind::feedback);
  ASSERT_TRUE(rich.message);
  EXPECT_NE(rich.message->find("Expected: 6"), std::string::npos);
  config.uninformative_feedback = "use";
  const auto bare = teacher_context(config, "feedback", "q", group, 0, std::nullopt);
  EXPECT_EQ(bare.kind, ContextKind::feedback);
  EXPECT_NE(bare.message->find("84 is incorrect"), std::string::npos);
  // A sibling's success outranks any feedback, and reference mode reports its own kind.
  const std::vector<RolloutView> with_success = {group[1], {true, "y = 2", "Correct.", false}};
  EXPECT_EQ(teacher_context(config, "feedback", "q", with_success, 0, std::nullopt).kind, ContextKind::sibling);
  EXPECT_EQ(teacher_context(config, "reference", "q", group, 0, std::string("r")).kind, ContextKind::reference);
  EXPECT_THROW(teacher_context(config, "feedback", "q", group, 2, std::nullopt), std::out_of_range);
}

TEST(TeacherContext, NewKeysAreValidated) {
  EXPECT_THROW(load_config_text("teacher:\n  uninformative_feedback: maybe\n"), ConfigError);
  EXPECT_THROW(load_config_text("teacher:\n  passed_without_sibling: self\n"), ConfigError);
  EXPECT_THROW(load_config_text("algo:\n  dual_clip: 0.5\n"), ConfigError);
  EXPECT_THROW(load_config_text("algo:\n  normalizer: rollouts\n"), ConfigError);
  const auto c = load_config_text("");
  EXPECT_EQ(c.algo.objective.normalizer, Normalizer::active_tokens);
  EXPECT_EQ(c.algo.objective.dual_clip, 3.0);
}

std::string error_key_of(const std::string& yaml) {
  try {
    load_config_text(yaml);
  } catch (const ConfigError& e) {
    return e.key();
  }
  return "";
}

std::string remote_error(const nlohmann::json& reply, std::size_t length = 2, int64_t k = 2) {
  try {
    parse_remote_topk(reply, length, k, 10);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(RemoteTeacher, ReplyIsValidatedFieldByField) {
  nlohmann::json good = {{"topk_ids", {{1, 2}, {3, 4}}}, {"topk_logprobs", {{-0.1, -2.5}, {-0.7, -0.8}}}};
  auto top = parse_remote_topk(good, 2, 2, 10);
  EXPECT_EQ(top.ids[1][0].item<int64_t>(), 3);
  EXPECT_NEAR(top.logp[0][1].item<float>(), -2.5f, 1e-6);
  EXPECT_NE(remote_error({{"topk_ids", {{1, 2}}}, {"topk_logprobs", {{-1, -1}}}}).find("topk_ids: has 1 rows"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", {{1, 2}, {3, 12}}}, {"topk_logprobs", good["topk_logprobs"]}})
                .find("outside the vocabulary"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", {{1, 1}, {3, 4}}}, {"topk_logprobs", good["topk_logprobs"]}}).find("duplicate"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", good["topk_ids"]}, {"topk_logprobs", {{0.5, -1}, {-1, -1}}}}).find("<= 0"),
            std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", good["topk_ids"]}, {"topk_logprobs", {{-0.01, -0.01}, {-1, -1}}}})
                .find("sum to more than 1"),
            std::string::npos);
  EXPECT_NE(remote_error(nlohmann::json::array()).find("<root>"), std::string::npos);
  EXPECT_NE(remote_error({{"topk_ids", {{1}, {2}}}, {"topk_logprobs", {{-1}, {-1}}}}).find("expected 2 ids"),
            std::string::npos);
}


model::CausalLM tiny_teacher_model() {
  model::ModelConfig config;
  config.family = model::Family::qwen3;
  config.vocab_size = 48;
  config.hidden_size = 32;
  config.intermediate_size = 64;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  config.tie_word_embeddings = true;
  config.max_position_embeddings = 64;
  config.pad_token_id = 0;
  return model::make_random(config, 11);
}

// The model's own next-token log-probs after `prefix`, one forward pass per call: what a vLLM
// server serving this model reports as prompt_logprobs.
testing::NextTokenLogprobs served_by(model::CausalLM model, std::mutex& mutex) {
  return [model, &mutex](const std::vector<std::int64_t>& prefix) mutable {
    std::lock_guard lock(mutex);
    torch::NoGradGuard no_grad;
    auto ids = torch::tensor(prefix, torch::kLong).unsqueeze(0);
    auto logits = model->forward(ids, torch::ones_like(ids));
    auto logp = torch::log_softmax(logits[0][-1].to(torch::kDouble), -1);
    return std::vector<double>(logp.data_ptr<double>(), logp.data_ptr<double>() + logp.numel());
  };
}

const TokenRows kPrompts = {{5, 6, 7, 8, 9, 10, 11}, {12, 13}, {14, 15, 16, 17}};
const TokenRows kResponses = {{20, 21, 22}, {23, 24, 25, 26, 27}, {28}};

TeacherSection remote_section(const std::string& api, const std::vector<std::string>& urls) {
  auto t = load_config_text("").teacher;
  t.remote_api = api;
  t.remote_urls = urls;
  t.remote_timeout_s = 30;
  t.remote_concurrency = 3;
  return t;
}

void expect_same_topk(const PositionTopK& remote, const PositionTopK& local) {
  ASSERT_EQ(remote.ids.sizes(), local.ids.sizes());
  EXPECT_TRUE(torch::equal(remote.ids, local.ids));
  EXPECT_LT((remote.logp - local.logp).abs().max().item<float>(), 1e-4);
}

TEST(RemoteTeacher, OpenAICompletionsTeacherEqualsTheSameModelScoredLocally) {
  auto model = tiny_teacher_model();
  std::mutex model_mutex;
  auto next = served_by(model, model_mutex);
  std::mutex seen_mutex;
  std::vector<nlohmann::json> seen;
  testing::FixtureHttpServer vllm([&](const testing::FixtureRequest& r) -> testing::FixtureResponse {
    if (r.target == "/v1/models") return {200, testing::vllm_models_reply("tiny").dump()};
    if (r.target != "/v1/completions") return {404, "{\"detail\":\"Not Found\"}"};
    const auto request = nlohmann::json::parse(r.body);
    {
      std::lock_guard lock(seen_mutex);
      seen.push_back(request);
    }
    return {200, testing::vllm_completion_reply("tiny", request["prompt"].get<std::vector<std::int64_t>>(),
                                                request["prompt_logprobs"].get<int>(), next)
                     .dump()};
  });
  auto remote = make_remote_teacher(remote_section("openai", {vllm.url()}), 48);
  auto local = make_local_teacher(model, ScoringLimits{0, 1024, 8192});
  expect_same_topk(remote->topk(kPrompts, kResponses, 5), local->topk(kPrompts, kResponses, 5));
  ASSERT_EQ(seen.size(), kPrompts.size());
  for (const auto& request : seen) EXPECT_EQ(request["model"], "tiny");
}

TEST(RemoteTeacher, DistilProtocolTeacherRunsRolloutsConcurrentlyOnAPath) {
  auto model = tiny_teacher_model();
  std::mutex model_mutex;
  std::vector<std::string> targets;
  testing::FixtureHttpServer server([&](const testing::FixtureRequest& r) -> testing::FixtureResponse {
    const auto request = nlohmann::json::parse(r.body);
    std::lock_guard lock(model_mutex);
    targets.push_back(r.target);
    const TokenRows prompt = {request["prompt_tokens"].get<std::vector<int32_t>>()};
    const TokenRows response = {request["response_tokens"].get<std::vector<int32_t>>()};
    auto top = response_topk(model, prompt, response, 0, request["top_k"].get<int64_t>(), 1024, 8192);
    nlohmann::json reply = {{"topk_ids", nlohmann::json::array()}, {"topk_logprobs", nlohmann::json::array()}};
    for (int64_t t = 0; t < top.ids.size(0); ++t) {
      std::vector<int64_t> ids(top.ids[t].data_ptr<int64_t>(), top.ids[t].data_ptr<int64_t>() + top.ids.size(1));
      auto lp = top.logp[t].contiguous();
      std::vector<float> logp(lp.data_ptr<float>(), lp.data_ptr<float>() + lp.numel());
      reply["topk_ids"].push_back(ids);
      reply["topk_logprobs"].push_back(logp);
    }
    return {200, reply.dump()};
  });
  auto remote = make_remote_teacher(remote_section("distil", {server.url() + "/teacher/topk"}), 48);
  auto local = make_local_teacher(model, ScoringLimits{0, 1024, 8192});
  expect_same_topk(remote->topk(kPrompts, kResponses, 4), local->topk(kPrompts, kResponses, 4));
  ASSERT_EQ(targets.size(), kPrompts.size());
  for (const auto& t : targets) EXPECT_EQ(t, "/teacher/topk");
}

TEST(RemoteTeacher, ConfigAcceptsAListOfReplicasAndRefusesBadUrls) {
  const auto c = load_config_text("teacher:\n  weights: remote\n  remote_api: openai\n  remote_url: [http://a:8000/v1, \"http://[::1]:8001\"]\n");
  EXPECT_EQ(c.teacher.remote_urls, (std::vector<std::string>{"http://a:8000/v1", "http://[::1]:8001"}));
  EXPECT_EQ(error_key_of("teacher:\n  remote_url: https://a:8000\n"), "teacher.remote_url");
  EXPECT_EQ(error_key_of("teacher:\n  remote_url: [http://a:1, \"http://b:0\"]\n"), "teacher.remote_url[1]");
  EXPECT_EQ(error_key_of("teacher:\n  remote_api: grpc\n"), "teacher.remote_api");
  EXPECT_EQ(error_key_of("teacher:\n  remote_concurrency: 0\n"), "teacher.remote_concurrency");
  EXPECT_EQ(error_key_of("env:\n  endpoints: [\"http://h:1/path\"]\n"), "env.endpoints[0]");
}

}  // namespace
}  // namespace distil::trainer
