// distil-train demo-data / demo-pretrain: command-line parsing only; the work is in demo_tasks
// and demo_pretrain.
#include <fstream>
#include <iostream>
#include <memory>

#include <yaml-cpp/yaml.h>

#include "trainer/cli.h"
#include "trainer/config.h"
#include "trainer/demo_pretrain.h"
#include "trainer/demo_tasks.h"

namespace distil::trainer {
namespace {

// A recipe file is a flat YAML mapping of numbers (configs/demo_pretrain.yaml); `--recipe-set
// key=value` overrides one key. Values become JSON numbers and PretrainRecipe::from_json
// validates names and ranges.
demo::PretrainRecipe load_recipe(const std::string& file, const std::vector<std::string>& overrides) {
  nlohmann::json j = nlohmann::json::object();
  auto scalar_to_json = [](const std::string& key, const std::string& text) -> nlohmann::json {
    try {
      std::size_t used = 0;
      if (text.find_first_of(".eE") == std::string::npos) {
        const long long v = std::stoll(text, &used);
        if (used == text.size()) return v;
      }
      const double v = std::stod(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument(key + ": expected a number, got '" + text + "'");
  };
  if (!file.empty()) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(file);
    } catch (const YAML::Exception& e) {
      throw std::invalid_argument(file + ": " + e.what());
    }
    if (!root.IsMap()) throw std::invalid_argument(file + ": expected a mapping of recipe keys to numbers");
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      if (!kv.second.IsScalar()) throw std::invalid_argument(file + ": " + key + ": expected a number");
      j[key] = scalar_to_json(key, kv.second.Scalar());
    }
  }
  for (const std::string& assignment : overrides) {
    const auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::invalid_argument("--recipe-set: '" + assignment + "' must look like key=value");
    const std::string key = assignment.substr(0, eq);
    j[key] = scalar_to_json(key, assignment.substr(eq + 1));
  }
  return demo::PretrainRecipe::from_json(j);
}

struct DataArgs {
  std::string out;
  std::string recipe_file;
  std::vector<std::string> recipe_overrides;
  std::size_t train = 1000;
  std::size_t eval = 200;
  uint64_t sample_seed = 0;
};

int run_demo_data(const DataArgs& args) {
  try {
    const demo::PretrainRecipe recipe = load_recipe(args.recipe_file, args.recipe_overrides);
    const demo::ProblemPools pools = demo::make_pools(recipe.split);
    const auto train = demo::sample_problems(pools.train, args.train, args.sample_seed);
    const auto eval = demo::sample_problems(pools.heldout, args.eval, args.sample_seed + 1);
    const std::filesystem::path dir(args.out);
    demo::write_task_jsonl(dir / "train.jsonl", train);
    demo::write_task_jsonl(dir / "eval.jsonl", eval);
    std::cout << "wrote " << train.size() << " train tasks to " << (dir / "train.jsonl").string() << " and "
              << eval.size() << " held-out tasks to " << (dir / "eval.jsonl").string() << " (pools: "
              << pools.train.size() << " train / " << pools.heldout.size() << " held-out problems)\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "distil-train demo-data: " << e.what() << "\n";
    return 1;
  }
}

struct PretrainArgs {
  std::vector<std::string> configs;
  std::vector<std::string> overrides;
  std::string recipe_file;
  std::vector<std::string> recipe_overrides;
  std::string cache = "runs/cache";
  std::string path_out;
  bool force = false;
  int accuracy_prompts = 100;
  int accuracy_samples = 4;
};

int run_demo_pretrain(const PretrainArgs& args) {
  try {
    const demo::PretrainRecipe recipe = load_recipe(args.recipe_file, args.recipe_overrides);
    // The corpus must use the teacher templates and chat settings training will use.
    const TrainConfig config = load_config(args.configs, args.overrides);
    demo::PretrainOptions options;
    options.cache_root = args.cache;
    options.force = args.force;
    options.accuracy_prompts = args.accuracy_prompts;
    options.accuracy_samples = args.accuracy_samples;
    options.log = [](const std::string& line) { std::cerr << line << std::endl; };
    const demo::PretrainReport report = demo::pretrain_or_reuse(recipe, demo::prompt_formats_from(config), options);
    std::cout << report.summary.dump(2) << "\n";
    if (!args.path_out.empty()) {
      std::ofstream out(args.path_out, std::ios::trunc);
      out << report.model_dir.string() << "\n";
      if (!out) throw std::runtime_error(args.path_out + ": cannot write");
    }
    std::cerr << "model: " << report.model_dir.string() << (report.reused ? " (cached)" : "") << "\n";
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "distil-train demo-pretrain: config error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "distil-train demo-pretrain: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace

void add_demo_commands(CLI::App& app, int& exit_code) {
  auto data = std::make_shared<DataArgs>();
  auto* data_cmd = app.add_subcommand(
      "demo-data", "Write the built-in demo tasks (two-digit arithmetic in \\boxed{}): train.jsonl, eval.jsonl");
  data_cmd->add_option("--out,-o", data->out, "Output directory")->required();
  data_cmd->add_option("--recipe", data->recipe_file, "Pretraining recipe YAML (its split seed/fraction)");
  data_cmd->add_option("--recipe-set", data->recipe_overrides, "Override one recipe key: key=value");
  data_cmd->add_option("--train", data->train, "Train tasks to write")->capture_default_str();
  data_cmd->add_option("--eval", data->eval, "Held-out tasks to write")->capture_default_str();
  data_cmd->add_option("--sample-seed", data->sample_seed, "Which problems of each pool to write")
      ->capture_default_str();
  data_cmd->callback([data, &exit_code] { exit_code = run_demo_data(*data); });

  auto pre = std::make_shared<PretrainArgs>();
  auto* pre_cmd = app.add_subcommand(
      "demo-pretrain", "Pretrain (or reuse from the cache) the demo's tiny Qwen3-family model from scratch");
  pre_cmd->add_option("--config,-c", pre->configs, "Training config(s): teacher templates and chat settings");
  pre_cmd->add_option("--set", pre->overrides, "Override one training config key: section.key=value");
  pre_cmd->add_option("--recipe", pre->recipe_file, "Pretraining recipe YAML (configs/demo_pretrain.yaml)");
  pre_cmd->add_option("--recipe-set", pre->recipe_overrides, "Override one recipe key: key=value");
  pre_cmd->add_option("--cache", pre->cache, "Cache root")->capture_default_str();
  pre_cmd->add_option("--path-out", pre->path_out, "Write the model directory's path to this file");
  pre_cmd->add_flag("--force", pre->force, "Retrain even if the cache has this recipe");
  pre_cmd->add_option("--accuracy-prompts", pre->accuracy_prompts, "Held-out problems for the accuracy report")
      ->capture_default_str();
  pre_cmd->add_option("--accuracy-samples", pre->accuracy_samples, "Samples per problem for the report")
      ->capture_default_str();
  pre_cmd->callback([pre, &exit_code] { exit_code = run_demo_pretrain(*pre); });
}

}  // namespace distil::trainer
