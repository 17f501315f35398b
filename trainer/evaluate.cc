#include "trainer/evaluate.h"

#include <algorithm>

#include "trainer/metrics.h"

namespace distil::trainer {

namespace {

nlohmann::json graded_json(const GradedSample& g) {
  return {{"graded", g.graded}, {"passed", g.passed}, {"reward", g.reward}, {"extracted", g.extracted},
          {"test_fraction", g.test_fraction}};
}

GradedSample graded_from(const nlohmann::json& j) {
  GradedSample g;
  g.graded = j.at("graded").get<bool>();
  g.passed = j.at("passed").get<bool>();
  g.reward = j.at("reward").get<double>();
  g.extracted = j.at("extracted").get<std::string>();
  g.test_fraction = j.at("test_fraction").get<double>();
  return g;
}

}  // namespace

nlohmann::json evaluate_part(model::CausalLM& model, const text::Tokenizer& tokenizer,
                             const PromptRenderer& renderer, const std::vector<tasks::Task>& tasks,
                             env::FeedbackClient& client, const EnvSection& env, const EvalSection& eval,
                             uint64_t seed, bool keep_samples, int part, int parts) {
  torch::NoGradGuard no_grad;
  const std::size_t count =
      eval.max_prompts > 0 ? std::min<std::size_t>(tasks.size(), eval.max_prompts) : tasks.size();
  auto batches = nlohmann::json::array();
  const std::size_t n = static_cast<std::size_t>(eval.samples);
  std::size_t batch_number = 0;
  for (std::size_t begin = 0; begin < count; begin += eval.batch_prompts, ++batch_number) {
    // Batch b belongs to part b mod parts. Its samples are seeded by its position alone, so a
    // batch draws the same samples whichever process generates it.
    if (static_cast<int>(batch_number % static_cast<std::size_t>(parts)) != part) continue;
    const std::size_t end = std::min(count, begin + static_cast<std::size_t>(eval.batch_prompts));
    std::vector<std::vector<int32_t>> prompt_tokens;
    for (std::size_t i = begin; i < end; ++i) {
      auto encoded = renderer.encode(tasks[i].prompt);
      for (std::size_t s = 0; s < n; ++s) prompt_tokens.push_back(encoded);
    }
    auto params = sampling_params(eval.temperature, eval.top_p, 0, eval.max_new_tokens, {},
                                  seed + 7919ULL * begin);
    auto generated = model::generate(model, tokenizer, prompt_tokens, params);
    std::vector<env::FeedbackItem> items;
    for (std::size_t i = begin; i < end; ++i) {
      for (std::size_t s = 0; s < n; ++s) {
        items.push_back(feedback_item(tasks[i], generated[(i - begin) * n + s].text, env));
      }
    }
    auto outcomes = client.feedback(items);
    std::vector<Rollout> rollouts(items.size());
    apply_feedback(rollouts, outcomes);
    nlohmann::json batch = {{"begin", begin}, {"prompts", nlohmann::json::array()}, {"samples", nlohmann::json::array()}};
    for (std::size_t i = begin; i < end; ++i) {
      nlohmann::json prompt = {{"task_id", tasks[i].id}, {"domain", tasks[i].domain}, {"samples", nlohmann::json::array()}};
      for (std::size_t s = 0; s < n; ++s) {
        const auto& r = rollouts[(i - begin) * n + s];
        GradedSample g;
        g.graded = r.graded;
        g.passed = r.passed;
        g.reward = r.reward;
        g.extracted = r.extracted;
        g.test_fraction = r.graded ? test_fraction_from_result(r.result) : 0.0;
        auto graded = graded_json(g);
        if (!r.graded) graded["error"] = r.feedback_error;
        prompt["samples"].push_back(std::move(graded));
        if (keep_samples) {
          batch["samples"].push_back({{"task_id", tasks[i].id},
                                      {"sample", s},
                                      {"graded", r.graded},
                                      {"error", r.feedback_error},
                                      {"passed", r.passed},
                                      {"reward", r.reward},
                                      {"verdict", r.verdict},
                                      {"extracted", r.extracted},
                                      {"response", generated[(i - begin) * n + s].text}});
        }
      }
      batch["prompts"].push_back(std::move(prompt));
    }
    batches.push_back(std::move(batch));
  }
  return {{"batches", batches}};
}

nlohmann::json combine_evaluation(const std::vector<nlohmann::json>& parts, const EnvSection& env,
                                  const EvalSection& eval, bool keep_samples) {
  std::vector<const nlohmann::json*> batches;
  for (const auto& part : parts)
    for (const auto& batch : part.at("batches")) batches.push_back(&batch);
  std::sort(batches.begin(), batches.end(), [](const nlohmann::json* a, const nlohmann::json* b) {
    return a->at("begin").get<std::size_t>() < b->at("begin").get<std::size_t>();
  });
  std::vector<PromptSamples> prompts;
  auto samples_json = nlohmann::json::array();
  std::size_t total = 0, failed = 0;
  std::string first_error;
  for (const auto* batch : batches) {
    for (const auto& prompt : batch->at("prompts")) {
      PromptSamples p{prompt.at("task_id").get<std::string>(), prompt.at("domain").get<std::string>(), {}};
      for (const auto& sample : prompt.at("samples")) {
        p.samples.push_back(graded_from(sample));
        ++total;
        if (!p.samples.back().graded) {
          ++failed;
          if (first_error.empty()) first_error = sample.value("error", "");
        }
      }
      prompts.push_back(std::move(p));
    }
    if (keep_samples)
      for (const auto& sample : batch->at("samples")) samples_json.push_back(sample);
  }
  if (total > 0 && (failed == total || static_cast<double>(failed) > eval.max_failed_feedback * static_cast<double>(total))) {
    const std::string endpoints = endpoint_list(env);
    throw EvaluationFailed("evaluation: the feedback of " + std::to_string(failed) + " of " + std::to_string(total) +
                           " samples failed (eval.max_failed_feedback allows " +
                           std::to_string(static_cast<int>(eval.max_failed_feedback * 100)) +
                           "%); endpoints: " + endpoints + "; first error: " + first_error);
  }
  nlohmann::json out;
  out["metrics"] = summarize_eval(prompts, eval.k);
  if (keep_samples) out["samples"] = samples_json;
  return out;
}

nlohmann::json evaluate(model::CausalLM& model, const text::Tokenizer& tokenizer,
                        const PromptRenderer& renderer, const std::vector<tasks::Task>& tasks,
                        env::FeedbackClient& client, const EnvSection& env, const EvalSection& eval,
                        uint64_t seed, bool keep_samples) {
  return combine_evaluation({evaluate_part(model, tokenizer, renderer, tasks, client, env, eval, seed, keep_samples, 0, 1)},
                            env, eval, keep_samples);
}

}  // namespace distil::trainer
