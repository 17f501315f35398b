// Configuration loading/validation and the evaluation metrics.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "tests/trainer/tfevents_reader.h"
#include "trainer/config.h"
#include "trainer/metrics.h"

namespace distil::trainer {
namespace {

std::string error_key(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    load_config_text(yaml, overrides);
  } catch (const ConfigError& e) {
    return e.key();
  }
  return "<no error>";
}

TEST(Config, ShippedDefaultFileIsTheBuiltInDefaults) {
  std::ifstream in(std::string(DISTIL_SOURCE_DIR) + "/configs/default.yaml");
  ASSERT_TRUE(in) << "configs/default.yaml missing";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), kDefaultConfigYaml);
  auto c = load_config_text("");
  EXPECT_EQ(c.algo.objective.name, "distil");
  EXPECT_EQ(c.algo.top_k, 20);
  EXPECT_EQ(c.rollout.group_size, 4);
  EXPECT_EQ(c.teacher.reprompt_template, "{prompt}{solution}{feedback}\n\nCorrectly solve the original question.");
}

struct FileKey {
  std::string name, default_yaml, doc;
};

// "section:" headers and "  key: value  # doc" lines of configs/default.yaml.
std::vector<FileKey> keys_of_default_file(const std::string& text) {
  std::vector<FileKey> keys;
  std::istringstream lines(text);
  std::string line, section;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] != ' ') {
      section = line.substr(0, line.find(':'));
      continue;
    }
    const auto colon = line.find(": ");
    if (colon == std::string::npos) {
      ADD_FAILURE() << "not a key line: " << line;
      continue;
    }
    FileKey key{section + "." + line.substr(2, colon - 2), line.substr(colon + 2), ""};
    bool quoted = false;  // a '#' inside a quoted default is not a comment
    for (std::size_t i = 0; i < key.default_yaml.size(); ++i) {
      const char ch = key.default_yaml[i];
      if (ch == '"' && (i == 0 || key.default_yaml[i - 1] != '\\')) quoted = !quoted;
      if (ch == '#' && !quoted && i > 0 && key.default_yaml[i - 1] == ' ') {
        key.doc = key.default_yaml.substr(i + 2);
        key.default_yaml = key.default_yaml.substr(0, key.default_yaml.find_last_not_of(' ', i - 1) + 1);
        break;
      }
    }
    keys.push_back(key);
  }
  return keys;
}

// The key table of config.cc drives parsing, validation and the printed configuration;
// configs/default.yaml (embedded as the defaults) documents it. They must say the same.
TEST(Config, KeyTableAndDefaultFileAgree) {
  std::ifstream in(std::string(DISTIL_SOURCE_DIR) + "/configs/default.yaml");
  ASSERT_TRUE(in) << "configs/default.yaml missing";
  std::stringstream text;
  text << in.rdbuf();
  const auto file = keys_of_default_file(text.str());
  const auto table = config_keys();
  ASSERT_FALSE(table.empty());
  std::map<std::string, FileKey> in_file;
  for (const auto& k : file) EXPECT_TRUE(in_file.emplace(k.name, k).second) << k.name << " twice in the file";
  std::set<std::string> in_table;
  for (const auto& k : table) {
    EXPECT_TRUE(in_table.insert(k.name).second) << k.name << " twice in the table";
    const auto it = in_file.find(k.name);
    if (it == in_file.end()) {
      ADD_FAILURE() << k.name << " is in the table but not in configs/default.yaml";
      continue;
    }
    EXPECT_EQ(it->second.default_yaml, k.default_yaml) << k.name << ": default";
    EXPECT_EQ(it->second.doc, k.doc) << k.name << ": doc";
    // The default as written loads as the key's value.
    EXPECT_NO_THROW(load_config_text("", {k.name + "=" + k.default_yaml})) << k.name;
  }
  for (const auto& k : file) EXPECT_TRUE(in_table.count(k.name)) << k.name << " is in configs/default.yaml but not in the table";
  // Same order and layout: the table writes the file.
  EXPECT_EQ(documented_default_config(), text.str());
  // The printed configuration lists the table's keys, in its order.
  const auto printed = load_config_text("").yaml;
  std::size_t at = 0;
  for (const auto& k : table) {
    const auto leaf = "\n  " + k.name.substr(k.name.find('.') + 1) + ":";
    const auto found = printed.find(leaf, at);
    EXPECT_NE(found, std::string::npos) << k.name << " not printed (in order)";
    if (found != std::string::npos) at = found;
  }
}

TEST(Config, OlmoChatFormatKeepsItsOlderName) {
  EXPECT_EQ(load_config_text("", {"model.chat_format=olmo2"}).model.chat_format, "olmo2");
  EXPECT_EQ(load_config_text("", {"model.chat_format=olmo"}).model.chat_format, "olmo");
  EXPECT_EQ(error_key("", {"model.chat_format=olmo3"}), "model.chat_format");
}

TEST(Config, FileThenOverridesApplyInOrder) {
  auto c = load_config_text("algo:\n  objective: grpo\n  top_k: 7\noptim:\n  lr: 0.5\n",
                            {"algo.top_k=9", "env.endpoints=[http://127.0.0.1:1, http://h:2]",
                             "env.options={reveal_answer: true}", "model.system_prompt="});
  EXPECT_EQ(c.algo.objective.name, "grpo");
  EXPECT_EQ(c.algo.top_k, 9);
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.5);
  ASSERT_EQ(c.env.endpoints.size(), 2u);
  EXPECT_EQ(c.env.options["reveal_answer"], true);
  EXPECT_EQ(c.model.system_prompt, "");
  // The merged document round-trips.
  auto again = load_config_text(c.yaml);
  EXPECT_EQ(again.yaml, c.yaml);
}

TEST(Config, UnknownKeysAndBadValuesNameTheKey) {
  EXPECT_EQ(error_key("algo:\n  topk: 3\n"), "algo.topk");
  EXPECT_EQ(error_key("nonsense: 1\n"), "nonsense");
  EXPECT_EQ(error_key("", {"optim.lr=fast"}), "optim.lr");
  EXPECT_EQ(error_key("", {"algo.objective=ppo"}), "algo.objective");
  EXPECT_EQ(error_key("", {"rollout.group_size=0"}), "rollout.group_size");
  EXPECT_EQ(error_key("", {"algo.jsd_mix=1.5"}), "algo.jsd_mix");
  EXPECT_EQ(error_key("", {"env.endpoints=[ftp://x]"}), "env.endpoints[0]");
  EXPECT_EQ(error_key("", {"teacher.weights=remote"}), "teacher.remote_url");
  EXPECT_EQ(error_key("", {"eval.k=[1, 8]"}), "eval.k[1]");
  EXPECT_EQ(error_key("", {"no_equals_sign"}), "no_equals_sign");
  EXPECT_EQ(error_key("", {"algo.nope.deeper=1"}), "algo.nope");
  EXPECT_EQ(error_key("algo: 3\n"), "algo");
  EXPECT_EQ(error_key("teacher:\n  solution_template: \"no placeholder\"\n"), "teacher.solution_template");
  EXPECT_EQ(error_key("[1, 2"), "<config>");
}

TEST(Config, TeacherDefaultsFollowTheObjective) {
  EXPECT_EQ(load_config_text("", {"algo.objective=sdpo"}).resolved_teacher_weights(), "ema");
  auto opsd = load_config_text("", {"algo.objective=opsd"});
  EXPECT_EQ(opsd.resolved_teacher_weights(), "initial");
  EXPECT_EQ(opsd.resolved_teacher_context(), "reference");
  EXPECT_EQ(load_config_text("").resolved_teacher_weights(), "current");
}

TEST(PassAtK, MatchesTheCombinatorialDefinition) {
  // 1 - C(n-c,k)/C(n,k): n=5, c=2, k=2 -> 1 - 3/10.
  EXPECT_NEAR(pass_at_k(5, 2, 2), 0.7, 1e-12);
  EXPECT_NEAR(pass_at_k(4, 1, 1), 0.25, 1e-12);
  EXPECT_EQ(pass_at_k(4, 0, 3), 0.0);
  EXPECT_EQ(pass_at_k(4, 2, 3), 1.0);
  EXPECT_THROW(pass_at_k(2, 1, 3), std::invalid_argument);
}

GradedSample sample(bool passed, const std::string& extracted, bool graded = true) {
  GradedSample s;
  s.graded = graded;
  s.passed = passed;
  s.reward = passed ? 1.0 : 0.0;
  s.extracted = extracted;
  s.test_fraction = s.reward;
  return s;
}

TEST(MajorityAtK, MostFrequentAnswerTiesGoToTheEarliest) {
  std::vector<GradedSample> s = {sample(false, "3"), sample(true, "2"), sample(true, "2"), sample(false, "3")};
  EXPECT_TRUE(majority_correct(s, 3));   // "2" twice vs "3" once
  EXPECT_FALSE(majority_correct(s, 4));  // tie 2-2: "3" came first
  EXPECT_FALSE(majority_correct(s, 1));
  std::vector<GradedSample> none = {sample(false, ""), sample(false, "")};
  EXPECT_FALSE(majority_correct(none, 2));
}

TEST(SummarizeEval, AveragesPerPromptAndPerDomainAndSkipsFailedFeedback) {
  std::vector<PromptSamples> prompts = {
      {"m1", "math", {sample(true, "2"), sample(false, "3"), sample(false, "", false)}},
      {"m2", "math", {sample(false, "1"), sample(false, "1")}},
      {"c1", "code", {sample(true, "x"), sample(true, "x")}},
  };
  prompts[2].samples[1].passed = false;
  prompts[2].samples[1].test_fraction = 0.5;
  auto j = summarize_eval(prompts, {1, 2});
  const auto& overall = j["overall"];
  EXPECT_EQ(overall["prompts"], 3);
  EXPECT_EQ(overall["samples"], 6);
  EXPECT_EQ(overall["failed_feedback"], 1);
  EXPECT_NEAR(overall["avg@n"].get<double>(), (0.5 + 0.0 + 0.5) / 3, 1e-12);
  EXPECT_NEAR(overall["pass@2"].get<double>(), (1.0 + 0.0 + 1.0) / 3, 1e-12);
  EXPECT_NEAR(j["per_domain"]["code"]["score"].get<double>(), 0.75, 1e-12);
  EXPECT_NEAR(j["per_domain"]["code"]["accuracy"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(j["per_domain"]["math"]["maj@2"].get<double>(), 0.5, 1e-12);
}

TEST(TestFraction, ReadsDetailsElseReward) {
  EXPECT_NEAR(test_fraction_from_result({{"reward", 0.2}, {"details", {{"tests_passed", 3}, {"tests_total", 4}}}}),
              0.75, 1e-12);
  EXPECT_NEAR(test_fraction_from_result({{"reward", 0.2}}), 0.2, 1e-12);
}

TEST(Plot, WritesOneSvgPerNumericMetricAndReportsBadLines) {
  const auto dir = std::filesystem::path(DISTIL_BINARY_DIR) / "tests" / "trainer" / "plot_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "metrics.jsonl");
    out << R"({"step": 1, "loss": 1.5, "time": {"student": 0.1}, "objective": "distil"})" << "\n"
        << "not json\n"
        << R"({"step": 2, "loss": 1.0, "time": {"student": 0.2}})" << "\n";
  }
  std::vector<std::string> errors;
  auto files = plot_metrics(dir / "metrics.jsonl", dir / "plots", &errors);
  EXPECT_EQ(errors.size(), 1u);
  ASSERT_TRUE(std::filesystem::exists(dir / "plots" / "loss.svg"));
  ASSERT_TRUE(std::filesystem::exists(dir / "plots" / "time_student.svg"));
  EXPECT_FALSE(std::filesystem::exists(dir / "plots" / "objective.svg"));
  std::ifstream svg(dir / "plots" / "loss.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_NE(text.str().find("<polyline"), std::string::npos);
  EXPECT_NE(text.str().find("</svg>"), std::string::npos);
}

TEST(MetricsWriter, WritesTheScalarsOfEachRecordToTensorBoardToo) {
  const auto dir = std::filesystem::path(DISTIL_BINARY_DIR) / "tests" / "trainer" / ("metrics-tb-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    TensorBoardOutput tensorboard;
    tensorboard.enabled = true;
    MetricsWriter writer(dir / "metrics.jsonl", false, tensorboard);
    EXPECT_EQ(writer.tensorboard_file().parent_path(), dir);
    writer.write(nlohmann::json::parse(R"({"step": 1, "loss": 0.5, "objective": "distil", "time": {"total": 1.5}})"));
    writer.write(nlohmann::json::parse(R"({"step": 2, "failed": true, "rollouts": 0, "loss": null})"));
    writer.write(nlohmann::json::parse(R"({"step": 2, "loss": 0.25, "lr": 1e-4, "update_applied": true})"));
    writer.write(nlohmann::json::parse(R"({"step": 2, "eval": {"avg@n": 0.75, "pass@4": 1.0}})"));
  }
  const auto files = test::event_files_in(dir);
  ASSERT_EQ(files.size(), 1u);
  const auto shown = test::shown_by_tensorboard({test::read_event_file(files[0])});
  EXPECT_EQ(shown, test::expected_from_metrics(dir / "metrics.jsonl"));
  const test::Series expected = {{"eval/avg@n", {{2, 0.75f}}},
                                 {"eval/pass@4", {{2, 1.0f}}},
                                 {"train/loss", {{1, 0.5f}, {2, 0.25f}}},
                                 {"train/lr", {{2, 1e-4f}}},
                                 {"train/time/total", {{1, 1.5f}}}};
  EXPECT_EQ(shown, expected);

  // Off: no event file.
  std::filesystem::remove(files[0]);
  { MetricsWriter(dir / "metrics.jsonl", true).write(nlohmann::json::parse(R"({"step": 3, "loss": 0.1})")); }
  EXPECT_TRUE(test::event_files_in(dir).empty());
  std::filesystem::remove_all(dir);
}

TEST(MetricsWriter, AnEventThatCannotBeWrittenIsReportedAndTensorBoardStops) {
  const auto dir = std::filesystem::path(DISTIL_BINARY_DIR) / "tests" / "trainer" / ("metrics-tb-err-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<std::string> errors;
  TensorBoardOutput tensorboard;
  tensorboard.enabled = true;
  tensorboard.on_error = [&](const std::string& m) { errors.push_back(m); };
  MetricsWriter writer(dir / "metrics.jsonl", false, tensorboard);
  const auto events_file = writer.tensorboard_file();
  // Twenty short keys: a short JSON line but a longer event (each value carries its "train/" tag),
  // so a file size limit between the two fails the event's write(2) with EFBIG, for real.
  nlohmann::json record = {{"step", 1}};
  for (int i = 0; i < 20; ++i) record["k" + std::to_string(i)] = 1;
  const auto line_size = record.dump().size() + 1;
  rlimit old_limit{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  rlimit small = old_limit;
  small.rlim_cur = std::max<rlim_t>(line_size, std::filesystem::file_size(events_file)) + 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  writer.write(record);
  setrlimit(RLIMIT_FSIZE, &old_limit);
  signal(SIGXFSZ, old_handler);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find(events_file.string()), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("metrics.jsonl goes on"), std::string::npos) << errors[0];
  EXPECT_TRUE(writer.tensorboard_file().empty());
  writer.write({{"step", 2}, {"loss", 0.5}});  // no second report, and the JSONL record lands
  EXPECT_EQ(errors.size(), 1u);
  std::ifstream in(dir / "metrics.jsonl");
  std::string first, second;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_EQ(nlohmann::json::parse(first)["step"], 1);
  EXPECT_EQ(nlohmann::json::parse(second)["step"], 2);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace distil::trainer
