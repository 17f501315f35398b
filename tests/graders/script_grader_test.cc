// The script grader runs a task author's Python grade() in the real sandbox.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include <gtest/gtest.h>

#include "graders/grader.h"
#include "tests/graders/shared_sandbox.h"

using namespace distil;
using distil::test::shared_sandbox;

namespace {

const char* kChemistryScript = R"PY(
import re

def grade(task, response):
    # the expected molecular formula is in the task's answer; compare element counts
    def counts(formula):
        return sorted(re.findall(r"([A-Z][a-z]?)(\d*)", formula))
    got = re.findall(r"Formula:\s*(\S+)", response)
    if not got:
        return {"reward": 0.0, "verdict": "format_error", "feedback": "State the result as 'Formula: <formula>'."}
    ok = counts(got[-1]) == counts(task["answer"])
    return {"reward": 1.0 if ok else 0.0, "extracted": got[-1],
            "feedback": "Correct." if ok else "The formula " + got[-1] + " does not balance.",
            "details": {"checked": True}}
)PY";

graders::GradeResult grade(const nlohmann::json& metadata, const std::string& response) {
  tasks::Task task = tasks::task_from_json({{"id", "chem"}, {"domain", "chemistry"}, {"prompt", "Formula of water?"},
                                            {"answer", "H2O"}, {"grader", "script"}, {"metadata", metadata}});
  graders::GradeContext context{shared_sandbox(nullptr)};
  return graders::grade(graders::Registry::builtin(), task, response, {}, context);
}

}  // namespace

TEST(ScriptGrader, RunsTheAuthorsGradeFunction) {
  std::string why;
  if (!shared_sandbox(&why)) GTEST_SKIP() << "no sandbox on this host: " << why;
  auto r = grade({{"script", kChemistryScript}}, "Two hydrogens, one oxygen. Formula: H2O");
  EXPECT_EQ(r.verdict, "accepted") << r.feedback;
  EXPECT_EQ(r.reward, 1.0);
  EXPECT_EQ(r.extracted, "H2O");
  EXPECT_EQ(r.details["checked"], true);
  r = grade({{"script", kChemistryScript}}, "Formula: HO2");
  EXPECT_EQ(r.verdict, "wrong_answer");
  EXPECT_EQ(r.feedback, "The formula HO2 does not balance.");
  r = grade({{"script", kChemistryScript}}, "water");
  EXPECT_EQ(r.verdict, "format_error");
}

TEST(ScriptGrader, ScriptFileUnderTheScriptsDirectory) {
  std::string why;
  if (!shared_sandbox(&why)) GTEST_SKIP() << "no sandbox on this host: " << why;
  const std::string dir = std::string(DISTIL_BINARY_DIR) + "/grader_scripts";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/chem.py") << kChemistryScript;
  setenv("DISTIL_GRADER_SCRIPTS", dir.c_str(), 1);
  EXPECT_TRUE(grade({{"script_file", "chem.py"}}, "Formula: H2O").passed);
  EXPECT_THROW(grade({{"script_file", "/etc/passwd"}}, "x"), tasks::TaskError);
  EXPECT_THROW(grade({{"script_file", "../chem.py"}}, "x"), tasks::TaskError);
  EXPECT_THROW(grade({{"script_file", "missing.py"}}, "x"), tasks::TaskError);
}

TEST(ScriptGrader, BrokenScriptsAreReportedNotThrown) {
  std::string why;
  if (!shared_sandbox(&why)) GTEST_SKIP() << "no sandbox on this host: " << why;
  auto r = grade({{"script", "def grade(task, response):\n    return 1 / 0\n"}}, "x");
  EXPECT_EQ(r.verdict, "sandbox_error");
  EXPECT_NE(r.feedback.find("ZeroDivisionError"), std::string::npos) << r.feedback;
  r = grade({{"script", "def grade(task, response):\n    return {'reward': 7}\n"}}, "x");
  EXPECT_EQ(r.verdict, "sandbox_error");
  r = grade({{"script", "def grade(task, response):\n    return {'feedback': 'no reward'}\n"}}, "x");
  EXPECT_EQ(r.verdict, "sandbox_error");
}

TEST(ScriptGrader, MissingScriptIsATaskError) {
  EXPECT_THROW(grade(nlohmann::json::object(), "x"), tasks::TaskError);
}
