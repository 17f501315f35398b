#include "trainer/evaluate.h"

#include <algorithm>

#include "trainer/metrics.h"

namespace distil::trainer {

nlohmann::json evaluate(model::CausalLM& model, const text::Tokenizer& tokenizer,
                        const PromptRenderer& renderer, const std::vector<tasks::Task>& tasks,
                        env::FeedbackClient& client, const EnvSection& env, const EvalSection& eval,
                        uint64_t seed, bool keep_samples) {
  torch::NoGradGuard no_grad;
  const std::size_t count =
      eval.max_prompts > 0 ? std::min<std::size_t>(tasks.size(), eval.max_prompts) : tasks.size();
  std::vector<PromptSamples> prompts;
  auto samples_json = nlohmann::json::array();
  std::size_t total = 0, failed = 0;
  std::string first_error;
  const std::size_t n = static_cast<std::size_t>(eval.samples);
  for (std::size_t begin = 0; begin < count; begin += eval.batch_prompts) {
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
    for (std::size_t i = begin; i < end; ++i) {
      PromptSamples p{tasks[i].id, tasks[i].domain, {}};
      for (std::size_t s = 0; s < n; ++s) {
        const auto& r = rollouts[(i - begin) * n + s];
        ++total;
        if (!r.graded) {
          ++failed;
          if (first_error.empty()) first_error = r.feedback_error;
        }
        GradedSample g;
        g.graded = r.graded;
        g.passed = r.passed;
        g.reward = r.reward;
        g.extracted = r.extracted;
        g.test_fraction = r.graded ? test_fraction_from_result(r.result) : 0.0;
        p.samples.push_back(g);
        if (keep_samples) {
          samples_json.push_back({{"task_id", tasks[i].id},
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
      prompts.push_back(std::move(p));
    }
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

}  // namespace distil::trainer
