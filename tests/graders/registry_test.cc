// The registry, options parsing, the result's JSON, and the worked example from docs/graders.md:
// a new domain is one Grader class and one registration line.
#include <gtest/gtest.h>

#include "graders/grader.h"

using namespace distil;

// ---- the docs/graders.md example, verbatim ----
class CapitalCityGrader : public graders::Grader {
 public:
  std::string name() const override { return "capital"; }
  std::string description() const override { return "Capital cities: the last line must name the city."; }
  graders::GradeResult grade(const tasks::Task& task, const std::string& response, const graders::GradeOptions&,
                             graders::GradeContext&) const override {
    if (!task.answer) throw tasks::TaskError("answer", "the capital grader needs the city");
    graders::GradeResult r;
    const std::string last_line = response.substr(response.find_last_of('\n') + 1);
    r.extracted = last_line;
    r.passed = last_line.find(*task.answer) != std::string::npos;
    r.reward = r.passed ? 1.0 : 0.0;
    r.verdict = r.passed ? "accepted" : "wrong_answer";
    r.feedback = r.passed ? "Correct." : "The last line does not name the capital.";
    return r;
  }
};
// ---- end of the example ----

TEST(Registry, BuiltinGradersAndDomainDefaults) {
  auto& registry = graders::Registry::builtin();
  const auto names = registry.names();
  for (const std::string expected : {"code", "math", "science", "script"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
    ASSERT_NE(registry.find(expected), nullptr);
    EXPECT_FALSE(registry.find(expected)->description().empty());
  }
  EXPECT_EQ(registry.find("nope"), nullptr);
  tasks::Task task;
  task.domain = "math";
  EXPECT_EQ(registry.for_task(task).name(), "math");
  task.grader = "science";
  EXPECT_EQ(registry.for_task(task).name(), "science");
  task.grader = "nope";
  try {
    registry.for_task(task);
    FAIL();
  } catch (const tasks::TaskError& e) {
    EXPECT_EQ(e.field(), "grader");
  }
  task.grader.clear();
  task.domain = "astrology";
  try {
    registry.for_task(task);
    FAIL();
  } catch (const tasks::TaskError& e) {
    EXPECT_EQ(e.field(), "domain");
  }
  EXPECT_TRUE(registry.find("code")->needs_sandbox());
  EXPECT_FALSE(registry.find("math")->needs_sandbox());
}

TEST(Registry, ANewDomainIsOneClassAndOneLine) {
  graders::Registry registry;  // a private registry; the server uses Registry::builtin()
  registry.add("capital", [] { return std::make_unique<CapitalCityGrader>(); });
  registry.set_domain_default("geography", "capital");
  EXPECT_THROW(registry.add("capital", [] { return std::make_unique<CapitalCityGrader>(); }), std::invalid_argument);
  tasks::Task task = tasks::task_from_json({{"id", "g1"}, {"domain", "geography"}, {"prompt", "Capital of France?"}, {"answer", "Paris"}});
  graders::GradeContext context;
  auto r = graders::grade(registry, task, "Let me think.\nParis", {}, context);
  EXPECT_TRUE(r.passed);
  EXPECT_EQ(r.task_id, "g1");
  EXPECT_EQ(r.details["grader"], "capital");
  EXPECT_TRUE(r.timing.contains("grade_ms"));
}

TEST(Options, ParsedWithFieldErrors) {
  auto o = graders::options_from_json({{"reveal_answer", true}, {"float_places", 3}, {"per_test_timeout_s", 1.5}});
  EXPECT_TRUE(o.reveal_answer);
  EXPECT_EQ(o.float_places, 3);
  EXPECT_DOUBLE_EQ(o.per_test_timeout_s, 1.5);
  EXPECT_EQ(o.max_failures_shown, 2);
  auto message = [](const nlohmann::json& j) {
    try {
      graders::options_from_json(j);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("<none>");
  };
  EXPECT_EQ(message({{"colour", 1}}), "options.colour: unknown option");
  EXPECT_EQ(message({{"reveal_answer", 1}}), "options.reveal_answer: must be a boolean, got number");
  EXPECT_NE(message({{"float_places", 99}}).find("options.float_places: must be between"), std::string::npos);
  EXPECT_NE(message({{"per_test_timeout_s", -1}}).find("options.per_test_timeout_s"), std::string::npos);
  EXPECT_NE(message(nlohmann::json::array()).find("options: must be an object"), std::string::npos);
  EXPECT_NO_THROW(graders::options_from_json(nullptr));
}

TEST(Result, JsonHasTheApiFields) {
  graders::GradeResult r;
  r.task_id = "t";
  r.reward = 1;
  r.passed = true;
  r.verdict = "accepted";
  auto j = graders::to_json(r);
  for (const char* key : {"task_id", "reward", "passed", "verdict", "feedback", "extracted", "details", "timing"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
}
