// distil-demo data / pretrain / probe: command-line parsing only; the work is in demo_tasks
// and demo_pretrain.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include <yaml-cpp/yaml.h>

#include "trainer/demo/demo_commands.h"
#include "trainer/commands/command_errors.h"
#include "trainer/config.h"
#include "trainer/demo/demo_pretrain.h"
#include "trainer/demo/demo_tasks.h"
#include "trainer/model/model.h"
#include "trainer/rollout.h"
#include "trainer/scoring.h"
#include "trainer/teacher.h"
#include "trainer/text/chat.h"

namespace distil::trainer {
namespace {

// A recipe file is a flat YAML mapping of numbers (configs/demo_pretrain.yaml); `--recipe-set
// key=value` overrides one key. Values become JSON numbers and PretrainRecipe::from_json
// validates names and ranges.
demo::PretrainRecipe load_recipe(const std::string& file, const std::vector<std::string>& overrides) {
  nlohmann::json j = nlohmann::json::object();
  auto scalar_to_json = [](const std::string& key, const std::string& text) -> nlohmann::json {
    if (key == "domain") return text;  // the one key that is a name (arithmetic | code)
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
  return exit_code_of("distil-demo data", [&] {
    const demo::PretrainRecipe recipe = load_recipe(args.recipe_file, args.recipe_overrides);
    const std::filesystem::path dir(args.out);
    if (recipe.domain == "code") {
      const demo::CodeTaskPools pools = demo::make_code_pools(demo::code_split_of(recipe));
      const auto train = demo::sample_code_tasks(pools.train, std::min(args.train, pools.train.size()), args.sample_seed);
      const auto eval = demo::sample_code_tasks(pools.heldout, std::min(args.eval, pools.heldout.size()),
                                                args.sample_seed + 1);
      demo::write_code_task_jsonl(dir / "train.jsonl", train);
      demo::write_code_task_jsonl(dir / "eval.jsonl", eval);
      std::cout << "wrote " << train.size() << " train code tasks to " << (dir / "train.jsonl").string() << " and "
                << eval.size() << " held-out code tasks to " << (dir / "eval.jsonl").string() << " (pools: "
                << pools.train.size() << " train / " << pools.heldout.size()
                << " held-out tasks; held-out rules are never trained on)\n";
      return 0;
    }
    const demo::ProblemPools pools = demo::make_pools(recipe.split);
    const auto train = demo::sample_problems(pools.train, args.train, args.sample_seed);
    const auto eval = demo::sample_problems(pools.heldout, args.eval, args.sample_seed + 1);
    demo::write_task_jsonl(dir / "train.jsonl", train);
    demo::write_task_jsonl(dir / "eval.jsonl", eval);
    std::cout << "wrote " << train.size() << " train tasks to " << (dir / "train.jsonl").string() << " and "
              << eval.size() << " held-out tasks to " << (dir / "eval.jsonl").string() << " (pools: "
              << pools.train.size() << " train / " << pools.heldout.size() << " held-out problems)\n";
    return 0;
  });
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
  return exit_code_of("distil-demo pretrain", [&] {
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
  });
}


struct ProbeArgs {
  std::vector<std::string> configs;
  std::vector<std::string> overrides;
  std::string model;
  std::string problem;   // e.g. add-47-38
  std::string response;  // the rollout being taught, e.g. \boxed{84}
  int top = 4;
  bool batched = false;
};

// Prints, at every token of `response`, the student's top tokens (plain prompt) beside the
// teacher's under each context the trainer can build (correct sibling, the real grader's feedback
// on this response, the reference solution): what signal distillation actually gets.
int run_demo_probe(const ProbeArgs& args) {
  return exit_code_of("distil-demo probe", [&] {
    const TrainConfig config = load_config(args.configs, args.overrides);
    int left = 0, right = 0;
    char op[4] = {0};
    if (std::sscanf(args.problem.c_str(), "%3[a-z]-%d-%d", op, &left, &right) != 3 ||
        (std::string(op) != "add" && std::string(op) != "sub"))
      throw std::invalid_argument("--problem: expected add-A-B or sub-A-B, got '" + args.problem + "'");
    const demo::Problem p{std::string(op) == "add" ? demo::Operation::add : demo::Operation::subtract, left, right};
    const text::Tokenizer tokenizer = text::Tokenizer::from_model_dir(args.model);
    model::CausalLM model = model::load_pretrained(args.model);
    model->eval();
    torch::NoGradGuard no_grad;
    const PromptRenderer renderer(config.model, tokenizer);
    const text::ChatFormat format = text::ChatFormat::for_model(tokenizer, config.model.chat_format);
    const std::vector<int32_t> response = tokenizer.encode(args.response + std::string(format.end_of_turn()), true);
    const std::string feedback = demo::grader_feedback(p, args.response);
    const bool passed = demo::grader_accepts(p, args.response);
    const auto reference = reference_solution(demo::to_task(p));
    const std::vector<RolloutView> with_sibling = {{passed, args.response, feedback},
                                                   {true, demo::boxed_response(p.answer()), "Correct."}};
    const std::vector<RolloutView> alone = {{passed, args.response, feedback}};
    std::vector<std::pair<std::string, std::string>> contexts = {{"student", p.prompt()}};
    for (auto [name, message] :
         {std::pair{"sibling", teacher_message(config.teacher, "feedback", p.prompt(), with_sibling, 0, reference)},
          {"feedback", teacher_message(config.teacher, "feedback", p.prompt(), alone, 0, reference)},
          {"reference", teacher_message(config.teacher, "reference", p.prompt(), alone, 0, reference)}})
      if (message) contexts.emplace_back(name, *message);
    std::cout << p.prompt() << "  answer " << p.answer() << "  response " << args.response << " ("
              << (passed ? "passed" : "failed") << ", grader feedback: " << feedback << ")\n";
    std::vector<PositionTopK> tops;
    if (args.batched) {
      // All contexts in one left-padded batch, as the trainer scores them.
      TokenRows prompts, responses;
      for (const auto& [name, message] : contexts) prompts.push_back(renderer.encode(message)), responses.push_back(response);
      const PositionTopK all = response_topk(model, prompts, responses, tokenizer.pad_token_id().value_or(0), args.top,
                                             1024, 1 << 20);
      const int64_t n = static_cast<int64_t>(response.size());
      for (std::size_t c = 0; c < contexts.size(); ++c)
        tops.push_back({all.ids.slice(0, c * n, (c + 1) * n), all.logp.slice(0, c * n, (c + 1) * n)});
    } else {
      for (const auto& [name, message] : contexts)
        tops.push_back(response_topk(model, {renderer.encode(message)}, {response},
                                     tokenizer.pad_token_id().value_or(0), args.top, 1024, 1 << 20));
    }
    std::printf("%-10s", "token");
    for (const auto& [name, message] : contexts) std::printf(" | %-40s", name.c_str());
    std::printf("\n");
    for (std::size_t t = 0; t < response.size(); ++t) {
      std::printf("%-10s", tokenizer.decode(std::vector<int32_t>{response[t]}, false).c_str());
      for (const auto& top : tops) {
        std::string cell;
        for (int64_t j = 0; j < top.ids.size(1); ++j) {
          char item[64];
          std::snprintf(item, sizeof item, "%s:%.2f ",
                        tokenizer.decode(std::vector<int32_t>{static_cast<int32_t>(top.ids[t][j].item<int64_t>())}, false).c_str(),
                        std::exp(top.logp[t][j].item<double>()));
          cell += item;
        }
        std::printf(" | %-40s", cell.c_str());
      }
      std::printf("\n");
    }
    return 0;
  });
}

}  // namespace

void add_demo_commands(CLI::App& app, int& exit_code) {
  auto data = std::make_shared<DataArgs>();
  auto* data_cmd = app.add_subcommand(
      "data", "Write the built-in demo tasks (the recipe's domain: arithmetic in \\boxed{}, or code: word-pipeline programs): train.jsonl, eval.jsonl");
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
      "pretrain", "Pretrain (or reuse from the cache) the demo's tiny Qwen3-family model from scratch");
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

  auto probe = std::make_shared<ProbeArgs>();
  auto* probe_cmd = app.add_subcommand(
      "probe", "Print the student's and each teacher context's top tokens at every position of a response");
  probe_cmd->add_option("--config,-c", probe->configs, "Training config(s): teacher templates and chat settings");
  probe_cmd->add_option("--set", probe->overrides, "Override one training config key: section.key=value");
  probe_cmd->add_option("--model", probe->model, "Model directory")->required();
  probe_cmd->add_option("--problem", probe->problem, "add-A-B or sub-A-B")->required();
  probe_cmd->add_option("--response", probe->response, "The response, e.g. '\\boxed{84}'")->required();
  probe_cmd->add_option("--top", probe->top, "Tokens shown per context")->capture_default_str();
  probe_cmd->add_flag("--batched", probe->batched, "Score all contexts in one left-padded batch (as training does)");
  probe_cmd->callback([probe, &exit_code] { exit_code = run_demo_probe(*probe); });
}

}  // namespace distil::trainer
