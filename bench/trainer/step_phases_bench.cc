// Time per training step by phase, distil vs grpo on the same batch of rollouts, same model.
// The optimiser step (identical for both) is left out. Feedback is synthetic here (alternating pass/fail within each group, a fixed feedback text) so
// the table measures the trainer, not the env server. Prints a markdown table with ratios.
//
//   trainer_step_bench [--hidden 256] [--layers 4] [--prompts 8] [--group 4] [--new-tokens 96]
//                      [--top-k 20] [--repeats 3] [--threads 0]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/cpu_info.h"
#include "trainer/config.h"
#include "trainer/model/generate.h"
#include "trainer/model/model.h"
#include "trainer/objectives.h"
#include "trainer/scoring.h"
#include "trainer/teacher.h"
#include "trainer/text/chat.h"
#include "trainer/text/tokenizer.h"

using namespace distil;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

int arg(int argc, char** argv, const std::string& name, int fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (name == argv[i]) return std::atoi(argv[i + 1]);
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int hidden = arg(argc, argv, "--hidden", 256);
  const int layers = arg(argc, argv, "--layers", 4);
  const int prompts = arg(argc, argv, "--prompts", 8);
  const int group = arg(argc, argv, "--group", 4);
  const int new_tokens = arg(argc, argv, "--new-tokens", 96);
  const int top_k = arg(argc, argv, "--top-k", 20);
  const int repeats = arg(argc, argv, "--repeats", 3);
  const int threads = arg(argc, argv, "--threads", 0);
  if (threads > 0) torch::set_num_threads(threads);

  const auto dir = std::filesystem::temp_directory_path() / ("distil-step-bench-" + std::to_string(getpid()));
  text::write_byte_level_tokenizer(dir, {});
  auto tokenizer = text::Tokenizer::from_model_dir(dir);
  model::ModelConfig config;
  config.vocab_size = tokenizer.vocab_size();
  config.hidden_size = hidden;
  config.intermediate_size = hidden * 3;
  config.num_hidden_layers = layers;
  config.num_attention_heads = std::max(1, hidden / 64);
  config.num_key_value_heads = std::max(1, hidden / 128);
  config.head_dim = 64;
  config.tie_word_embeddings = true;
  config.max_position_embeddings = 4096;
  config.eos_token_id = tokenizer.eos_token_ids().front();
  auto model = model::make_random(config, 3);
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-5));

  // Rollouts: one generate call for the whole batch (the same for both objectives).
  const text::ChatFormat chat = text::ChatFormat::from_name("chatml");
  std::vector<std::vector<int32_t>> prompt_rows;
  std::vector<std::string> prompt_texts;
  for (int p = 0; p < prompts; ++p) {
    const std::string question = "Compute " + std::to_string(p + 2) + " * 17 and give the answer in \\boxed{}.";
    prompt_texts.push_back(question);
    for (int g = 0; g < group; ++g) {
      prompt_rows.push_back(tokenizer.encode(chat.render({{"user", question}}, true), true));
    }
  }
  model::SamplingParams params;
  params.max_new_tokens = new_tokens;
  params.eos_ids = {-1};  // never stop early: every response is new_tokens long
  params.seed = 1;
  auto start = Clock::now();
  std::vector<model::GeneratedSequence> generated;
  {
    torch::NoGradGuard no_grad;
    generated = model::generate(model, tokenizer, prompt_rows, params);
  }
  const double generation_ms = ms_since(start);

  trainer::TokenRows responses;
  for (auto& g : generated) responses.push_back(g.tokens);
  auto sampled_tokens = std::vector<int64_t>();
  for (const auto& r : responses) sampled_tokens.insert(sampled_tokens.end(), r.begin(), r.end());
  const int64_t positions = static_cast<int64_t>(sampled_tokens.size());
  const int64_t b = static_cast<int64_t>(responses.size());
  int64_t t_max = 0;
  for (const auto& r : responses) t_max = std::max<int64_t>(t_max, r.size());

  // Synthetic feedback and the teacher prompts it implies.
  trainer::TeacherSection teacher_cfg = trainer::load_config_text("").teacher;
  trainer::TokenRows teacher_prompts;
  std::vector<float> rewards;
  for (int p = 0; p < prompts; ++p) {
    std::vector<trainer::RolloutView> views;
    for (int g = 0; g < group; ++g) {
      const bool passed = g % 2 == 0;
      rewards.push_back(passed ? 1.0f : 0.0f);
      views.push_back({passed, generated[p * group + g].text, passed ? "" : "Wrong answer: expected 34."});
    }
    for (int g = 0; g < group; ++g) {
      auto message = trainer::teacher_message(teacher_cfg, "feedback", prompt_texts[p], views, g, std::nullopt);
      teacher_prompts.push_back(tokenizer.encode(chat.render({{"user", *message}}, true), true));
    }
  }

  std::map<std::string, std::map<std::string, double>> table;  // objective -> phase -> ms (mean)
  for (const std::string name : {"grpo", "distil"}) {
    trainer::ObjectiveOptions options;
    options.name = name;
    auto objective = trainer::make_objective(options);
    auto teacher = trainer::make_local_teacher(model, {0, 1024, 1 << 20});
    for (int rep = 0; rep < repeats + 1; ++rep) {  // the first repeat warms up and is discarded
      trainer::StudentMicroBatch micro;
      micro.prompts = prompt_rows;
      micro.responses = responses;
      micro.targets.sampled = torch::tensor(sampled_tokens, torch::kLong);
      double teacher_ms = 0.0;
      if (objective->needs_teacher()) {
        start = Clock::now();
        auto top = teacher->topk(teacher_prompts, responses, top_k);
        teacher_ms = ms_since(start);
        micro.targets.teacher_ids = top.ids;
        micro.targets.teacher_logp = top.logp;
      }
      auto mask = torch::zeros({b, t_max});
      for (int64_t i = 0; i < b; ++i) mask[i].slice(0, 0, responses[i].size()).fill_(1.0);
      micro.batch.mask = mask;
      micro.batch.group = torch::arange(prompts, torch::kLong).repeat_interleave(group);
      micro.batch.reward = torch::tensor(rewards);
      micro.batch.active = torch::ones({b});
      micro.batch.normalizer = static_cast<double>(positions);
      start = Clock::now();
      trainer::student_backward(model, *objective, micro, 0, 1024);
      const double student_ms = ms_since(start);
      // The AdamW step is the same for both objectives and is not applied, so every repeat sees the
      // same weights.
      optimizer.zero_grad();
      if (rep == 0) continue;
      table[name]["teacher"] += teacher_ms / repeats;
      table[name]["student (fwd+objective+bwd)"] += student_ms / repeats;
    }
    table[name]["generation"] = generation_ms;
  }
  std::filesystem::remove_all(dir);

  auto total = [&](const std::string& name, bool with_generation) {
    double sum = 0.0;
    for (const auto& [phase, ms] : table[name]) {
      if (with_generation || phase != "generation") sum += ms;
    }
    return sum;
  };
  std::printf("%s\n", distil::common::cpu_description().c_str());
  std::printf("model: hidden %d, layers %d, vocab %lld; batch %d prompts x %d samples x %d tokens; top-k %d; "
              "%d threads; mean of %d repeats\n\n",
              hidden, layers, static_cast<long long>(config.vocab_size), prompts, group, new_tokens, top_k,
              torch::get_num_threads(), repeats);
  std::printf("| phase | grpo ms | distil ms | distil / grpo |\n|---|---:|---:|---:|\n");
  for (const std::string phase : {"generation", "teacher", "student (fwd+objective+bwd)"}) {
    const double g = table["grpo"][phase], d = table["distil"][phase];
    std::printf("| %s | %.1f | %.1f | %s |\n", phase.c_str(), g, d,
                g > 0 ? (std::to_string(d / g).substr(0, 5)).c_str() : "-");
  }
  const double g_all = total("grpo", true), d_all = total("distil", true);
  const double g_train = total("grpo", false), d_train = total("distil", false);
  std::printf("| step (with generation) | %.1f | %.1f | %.3f |\n", g_all, d_all, d_all / g_all);
  std::printf("| step (without generation) | %.1f | %.1f | %.3f |\n", g_train, d_train, d_train / g_train);
  std::printf("\nteacher pass + objective add %.1f%% to a GRPO step (target <= 50%%)\n",
              100.0 * (d_all - g_all) / g_all);
  return 0;
}
