#include "tasks/task.h"

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

using distil::tasks::Task;
using distil::tasks::TaskError;
using nlohmann::json;

namespace {

std::string field_of(const json& j) {
  try {
    distil::tasks::task_from_json(j);
  } catch (const TaskError& e) {
    return e.field();
  }
  return "<no error>";
}

std::string write_temp(const std::string& name, const std::string& content) {
  std::string path = std::string(DISTIL_BINARY_DIR) + "/" + name;
  std::ofstream(path) << content;
  return path;
}

}  // namespace

TEST(TaskRecord, RoundTripsEveryField) {
  json j = {{"id", "t1"},
            {"domain", "code"},
            {"prompt", "Add two numbers."},
            {"tests", {{{"input", "1 2\n"}, {"output", "3\n"}, {"type", "stdin"}},
                       {{"input", "[1]\n[2]"}, {"output", "3"}, {"type", "functional"}}}},
            {"metadata", {{"func_name", "add"}, {"starter_code", "class Solution: ..."}}}};
  Task t = distil::tasks::task_from_json(j);
  EXPECT_EQ(t.id, "t1");
  ASSERT_EQ(t.tests.size(), 2u);
  EXPECT_EQ(t.tests[1].type, distil::tasks::TestType::functional);
  EXPECT_EQ(distil::tasks::to_json(t), j);
}

TEST(TaskRecord, NumericAnswerBecomesText) {
  Task t = distil::tasks::task_from_json({{"id", "a"}, {"domain", "math"}, {"prompt", "p"}, {"answer", 204}});
  EXPECT_EQ(t.answer.value(), "204");
}

TEST(TaskRecord, ErrorsNameTheField) {
  EXPECT_EQ(field_of(json::array()), "task");
  EXPECT_EQ(field_of({{"domain", "math"}, {"prompt", "p"}, {"answer", "1"}}), "id");
  EXPECT_EQ(field_of({{"id", 5}, {"domain", "math"}, {"prompt", "p"}}), "id");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "math"}, {"prompt", "p"}}), "answer");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "math"}, {"prompt", "p"}, {"answer", "1"}, {"extra", 1}}), "extra");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "code"}, {"prompt", "p"}}), "tests");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "code"}, {"prompt", "p"}, {"tests", {{{"input", "1"}}}}}),
            "tests[0].output");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "code"}, {"prompt", "p"},
                      {"tests", {{{"input", "1"}, {"output", "2"}, {"type", "weird"}}}}}),
            "tests[0].type");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "code"}, {"prompt", "p"},
                      {"tests", {{{"input", "1"}, {"output", "2"}, {"type", "functional"}}}}}),
            "metadata.func_name");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "science"}, {"prompt", "p"}, {"answer", "A"}, {"choices", {"a", 3}}}),
            "choices[1]");
  EXPECT_EQ(field_of({{"id", "x\n"}, {"domain", "math"}, {"prompt", "p"}, {"answer", "1"}}), "id");
  EXPECT_EQ(field_of({{"id", "x"}, {"domain", "math"}, {"prompt", "p"}, {"answer", "1"}, {"metadata", "m"}}),
            "metadata");
}

TEST(TaskRecord, UserDomainNeedsNoAnswer) {
  Task t = distil::tasks::task_from_json({{"id", "x"}, {"domain", "chemistry"}, {"prompt", "p"}, {"grader", "script"}});
  EXPECT_EQ(t.grader, "script");
}

TEST(LoadJsonl, FirstBadLineThrowsWithLineAndField) {
  const std::string path = write_temp("tasks_bad.jsonl",
                                      "{\"id\":\"a\",\"domain\":\"math\",\"prompt\":\"p\",\"answer\":\"1\"}\n"
                                      "\n"
                                      "{\"id\":\"b\",\"domain\":\"math\",\"prompt\":\"p\"}\n"
                                      "not json\n"
                                      "{\"id\":\"a\",\"domain\":\"math\",\"prompt\":\"p\",\"answer\":\"2\"}\n"
                                      "{\"id\":\"c\",\"domain\":\"math\",\"prompt\":\"p\",\"answer\":\"3\"}\n");
  try {
    distil::tasks::load_jsonl(path);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), path + ":3: answer: a math task needs a reference answer");
  }
  auto result = distil::tasks::load_jsonl(path, {.skip_bad_lines = true});
  ASSERT_EQ(result.tasks.size(), 2u);
  EXPECT_EQ(result.tasks[0].id, "a");
  EXPECT_EQ(result.tasks[1].id, "c");
  ASSERT_EQ(result.errors.size(), 3u);
  EXPECT_EQ(result.errors[0].line, 3u);
  EXPECT_EQ(result.errors[1].line, 4u);
  EXPECT_EQ(result.errors[1].field, "json");
  EXPECT_EQ(result.errors[2].line, 5u);
  EXPECT_EQ(result.errors[2].field, "id");
  EXPECT_NE(result.errors[2].message.find("first on line 1"), std::string::npos);
}

TEST(LoadJsonl, MissingFileIsAnError) {
  EXPECT_THROW(distil::tasks::load_jsonl("/nonexistent/tasks.jsonl"), std::runtime_error);
}
