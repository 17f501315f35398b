// distil-train train / plot and distil-eval: command-line parsing only; the work is in Trainer,
// evaluate() and plot_metrics().
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>


#include "env_server/client/feedback_client.h"
#include "trainer/commands/cli.h"
#include "trainer/commands/command_errors.h"
#include "trainer/config.h"
#include "trainer/evaluate.h"
#include "trainer/memory_plan.h"
#include "trainer/metrics.h"
#include "trainer/rollout.h"
#include "trainer/trainer.h"

namespace distil::trainer {
namespace {

struct TrainArgs {
  std::vector<std::string> configs;
  std::vector<std::string> overrides;
  std::string resume;
  bool print_only = false;
};

int run_train(const TrainArgs& args) {
  return exit_code_of("distil-train", [&] {
    TrainConfig config = load_config(args.configs, args.overrides);
    std::cout << "# distil-train configuration\n" << config.yaml << std::flush;
    if (args.print_only) return 0;
    Trainer trainer(std::move(config), args.resume);
    trainer.run();
    return 0;
  });
}

}  // namespace

void add_train_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "Train with DistIL or a baseline (see docs/trainer.md)");
  cmd->add_option("--config,-c", args->configs, "YAML config file(s), merged in order over the defaults");
  cmd->add_option("--set", args->overrides, "Override one key: section.key=value (repeatable)");
  cmd->add_option("--resume", args->resume, "Checkpoint directory, or 'latest' in train.output_dir");
  cmd->add_flag("--print-config", args->print_only, "Print the merged configuration and exit");
  cmd->callback([args, &exit_code] { exit_code = run_train(*args); });
}

void add_memory_plan_command(CLI::App& app, int& exit_code) {
  struct PlanArgs {
    std::vector<std::string> configs, overrides;
    std::string model_config;
    int world_size = 1;
    double memory_gb = 0;
    int64_t prompt_tokens = 1024;
    std::string device = "cuda";
  };
  auto args = std::make_shared<PlanArgs>();
  auto* cmd = app.add_subcommand("memory-plan",
                                 "Print the per-rank memory plan of a training config, without loading weights");
  cmd->add_option("--config,-c", args->configs, "YAML config file(s), merged in order over the defaults");
  cmd->add_option("--set", args->overrides, "Override one key: section.key=value (repeatable)");
  cmd->add_option("--model-config", args->model_config,
                  "config.json (or model directory) to plan for; default: model.path's");
  cmd->add_option("--world-size", args->world_size, "Processes (GPUs) the global batch is split over")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--memory-gb", args->memory_gb, "Memory per rank in GB (e.g. 141 for an H200, 80 for an H100)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prompt-tokens", args->prompt_tokens, "Longest prompt, in tokens")->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--device", args->device, "cuda (LibTorch 2.x fused attention) or cpu")
      ->check(CLI::IsMember({"cuda", "cpu"}));
  cmd->callback([args, &exit_code] {
    exit_code = exit_code_of("distil-train memory-plan", [&] {
      TrainConfig config = load_config(args->configs, args->overrides);
      const std::string source = !args->model_config.empty() ? args->model_config : config.model.path;
      if (source.empty()) throw ConfigError("model.path", "required (or --model-config)");
      const ModelShape shape = read_model_shape(source);
      const bool fused = args->device == "cuda";
      const auto inputs = memory_plan_inputs(config, shape, args->world_size, args->prompt_tokens, fused);
      const double budget = args->memory_gb * 1e9;
      std::cout << format_memory_plan(plan_memory(inputs), inputs, budget);
      if (budget <= 0) return 0;
      std::string key;
      const std::string shortfall = memory_shortfall(inputs, budget, key);
      if (!shortfall.empty()) std::cout << "does not fit: " << key << ": " << shortfall << "\n";
      const int needed = smallest_fitting_world_size(config, shape, args->prompt_tokens, fused, budget);
      if (needed > 0) {
        std::cout << "smallest world size (a power of two) that fits " << args->memory_gb << " GB per rank: " << needed
                  << "\n";
      } else {
        // What no number of ranks divides: with zero_stage <= 2 every rank holds the weights, their
        // gradients, the teacher copy and its own activations whole.
        const auto at_scale = plan_memory(memory_plan_inputs(config, shape, 1024, args->prompt_tokens, fused));
        const double floor = at_scale.bytes("weights") + at_scale.bytes("gradients") + at_scale.bytes("teacher copy") +
                             at_scale.bytes("activations");
        char gb[32];
        std::snprintf(gb, sizeof gb, "%.1f", floor / 1e9);
        std::cout << "no world size up to 1024 fits " << args->memory_gb << " GB per rank: weights, gradients, the "
                  << "teacher copy and one micro-batch's activations are " << gb
                  << " GB on every rank however many there are (parameter sharding, zero_stage 3, is not built); "
                  << "lower rollout.group_size or optim.micro_batch_tokens, or use teacher.weights=current\n";
      }
      return shortfall.empty() ? 0 : 1;
    });
  });
}

void add_plot_command(CLI::App& app, int& exit_code) {
  auto metrics = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("plot", "Render a metrics.jsonl to SVG line charts (one per metric)");
  cmd->add_option("--metrics", *metrics, "metrics.jsonl written by train")->required();
  cmd->add_option("--out", *out, "Output directory (index.html + one SVG per metric)")->required();
  cmd->callback([metrics, out, &exit_code] {
    exit_code = exit_code_of("distil-train plot", [&] {
      std::vector<std::string> errors;
      auto files = plot_metrics(*metrics, *out, &errors);
      for (const auto& e : errors) std::cerr << "skipped: " << e << "\n";
      std::cout << "wrote " << files.size() << " files to " << *out << "\n";
      return 0;
    });
  });
}

void configure_eval_app(CLI::App& app, int& exit_code) {
  struct EvalArgs {
    std::vector<std::string> configs, overrides, tasks, endpoints;
    std::string model, out;
    int samples = 0, max_new_tokens = 0, max_prompts = -1;
    double temperature = -1;
    std::vector<int> k;
    bool keep_samples = false;
  };
  auto args = std::make_shared<EvalArgs>();
  app.add_option("--config,-c", args->configs, "YAML config file(s) (the train config works)");
  app.add_option("--set", args->overrides, "Override one key: section.key=value (repeatable)");
  app.add_option("--model", args->model, "Model directory (model.path)");
  app.add_option("--tasks", args->tasks, "Task JSONL files (data.eval_tasks)");
  app.add_option("--endpoint", args->endpoints, "distil-env base URL (env.endpoints)");
  app.add_option("--samples,-n", args->samples, "Samples per prompt (eval.samples)");
  app.add_option("--temperature", args->temperature, "Sampling temperature (eval.temperature)");
  app.add_option("--max-new-tokens", args->max_new_tokens, "eval.max_new_tokens");
  app.add_option("--max-prompts", args->max_prompts, "eval.max_prompts (0 = all)");
  app.add_option("--k", args->k, "k values for pass@k / maj@k (eval.k)")->delimiter(',');
  app.add_option("--out,-o", args->out, "Write the JSON result here (default: stdout)");
  app.add_flag("--samples-out", args->keep_samples, "Include every sample in the JSON");
  app.callback([args, &exit_code] {
    exit_code = exit_code_of("distil-eval", [&] {
      auto overrides = args->overrides;
      auto list = [](const std::vector<std::string>& v) {
        std::string s = "[";
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + nlohmann::json(v[i]).dump();
        return s + "]";
      };
      if (!args->model.empty()) overrides.push_back("model.path=" + nlohmann::json(args->model).dump());
      if (!args->tasks.empty()) overrides.push_back("data.eval_tasks=" + list(args->tasks));
      if (!args->endpoints.empty()) overrides.push_back("env.endpoints=" + list(args->endpoints));
      if (args->samples > 0) overrides.push_back("eval.samples=" + std::to_string(args->samples));
      if (args->temperature >= 0) overrides.push_back("eval.temperature=" + std::to_string(args->temperature));
      if (args->max_new_tokens > 0) overrides.push_back("eval.max_new_tokens=" + std::to_string(args->max_new_tokens));
      if (args->max_prompts >= 0) overrides.push_back("eval.max_prompts=" + std::to_string(args->max_prompts));
      if (!args->k.empty()) {
        std::string s = "[";
        for (std::size_t i = 0; i < args->k.size(); ++i) s += (i ? ", " : "") + std::to_string(args->k[i]);
        overrides.push_back("eval.k=" + s + "]");
      }
      TrainConfig config = load_config(args->configs, overrides);
      if (config.model.path.empty()) throw ConfigError("model.path", "required (--model)");
      if (config.env.endpoints.empty()) throw ConfigError("env.endpoints", "required (--endpoint)");
      auto tasks = load_task_files(config.data.eval_tasks, config.data.domains, "data.eval_tasks");
      const auto device = resolve_device(config.model.device);
      auto tokenizer = text::Tokenizer::from_model_dir(config.model.path);
      auto model = model::load_pretrained(config.model.path, device, model::dtype_from_name(config.model.dtype));
      if (!config.model.compute_dtype.empty()) {
        model->set_compute_dtype(model::dtype_from_name(config.model.compute_dtype));
      }
      PromptRenderer renderer(config.model, tokenizer);
      env::FeedbackClient client(client_config(config.env));
      client.require_endpoints();
      auto result = evaluate(model, tokenizer, renderer, tasks, client, config.env, config.eval,
                             config.train.seed, args->keep_samples);
      result["model"] = config.model.path;
      result["config"] = {{"samples", config.eval.samples}, {"temperature", config.eval.temperature},
                          {"max_new_tokens", config.eval.max_new_tokens}};
      const std::string text = result.dump(2) + "\n";
      if (args->out.empty()) {
        std::cout << text;
      } else {
        std::ofstream out(args->out);
        if (!out) throw std::runtime_error("cannot write " + args->out);
        out << text;
      }
      return 0;
    });
  });
}

}  // namespace distil::trainer
