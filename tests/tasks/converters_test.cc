#include "tasks/converters.h"

#include <gtest/gtest.h>

using namespace distil::tasks;

namespace {
std::string fixture(const std::string& name) { return std::string(DISTIL_SOURCE_DIR) + "/tests/tasks/fixtures/" + name; }
}  // namespace

TEST(LiveCodeBenchConverter, StdinRecordWithCompressedPrivateTests) {
  auto result = convert_file(fixture("lcb.jsonl"), SourceFormat::livecodebench);
  ASSERT_EQ(result.tasks.size(), 2u);
  const Task& t = result.tasks[0];
  EXPECT_EQ(t.id, "lcb/abc999_a");
  EXPECT_EQ(t.domain, "code");
  ASSERT_EQ(t.tests.size(), 3u) << "1 public + 2 private (base64/zlib/pickle)";
  EXPECT_EQ(t.tests[1].input, "0\n");
  EXPECT_EQ(t.tests[2].output, "-14\n");
  EXPECT_EQ(t.tests[2].type, TestType::stdin_io);
  EXPECT_NE(t.prompt.find("stdin"), std::string::npos);
  EXPECT_EQ(t.metadata["platform"], "atcoder");
}

TEST(LiveCodeBenchConverter, FunctionalRecord) {
  auto result = convert_file(fixture("lcb.jsonl"), SourceFormat::livecodebench);
  const Task& t = result.tasks[1];
  EXPECT_EQ(t.metadata["func_name"], "maxPairSum");
  ASSERT_EQ(t.tests.size(), 2u);
  EXPECT_EQ(t.tests[0].type, TestType::functional);
  EXPECT_NE(t.prompt.find("class Solution"), std::string::npos);
  EXPECT_EQ(t.metadata["starter_code"].get<std::string>().rfind("class Solution", 0), 0u);
}

TEST(LiveCodeBenchConverter, BadRecordsNameLineAndField) {
  EXPECT_THROW(convert_file(fixture("lcb_bad.jsonl"), SourceFormat::livecodebench), std::runtime_error);
  ConvertOptions options;
  options.skip_bad_lines = true;
  auto result = convert_file(fixture("lcb_bad.jsonl"), SourceFormat::livecodebench, options);
  EXPECT_EQ(result.tasks.size(), 1u);
  ASSERT_EQ(result.errors.size(), 2u);
  EXPECT_EQ(result.errors[0].line, 2u);
  EXPECT_EQ(result.errors[0].field, "public_test_cases");
  EXPECT_EQ(result.errors[1].line, 3u);
  EXPECT_EQ(result.errors[1].field, "json");
}

TEST(LiveCodeBenchConverter, DecoderRejectsGarbage) {
  EXPECT_THROW(decode_lcb_compressed("!!!"), std::runtime_error);
  EXPECT_THROW(decode_lcb_compressed("aGVsbG8="), std::runtime_error);  // base64 of "hello": not zlib
}

TEST(MathConverter, Math500AimeMinerva) {
  auto math500 = convert_file(fixture("math500.jsonl"), SourceFormat::math);
  ASSERT_EQ(math500.tasks.size(), 2u);
  EXPECT_EQ(math500.tasks[1].answer.value(), "\\frac{3}{4}");
  EXPECT_EQ(math500.tasks[1].id, "math/test/prealgebra/2.json");
  EXPECT_NE(math500.tasks[0].prompt.find("\\boxed{}"), std::string::npos);

  ConvertOptions aime_options;
  aime_options.id_prefix = "aime";
  auto aime = convert_file(fixture("aime.jsonl"), SourceFormat::math, aime_options);
  ASSERT_EQ(aime.tasks.size(), 2u);
  EXPECT_EQ(aime.tasks[0].id, "aime/2026-I-1");
  EXPECT_EQ(aime.tasks[0].answer.value(), "24");
  EXPECT_EQ(aime.tasks[1].id, "aime/2");

  ConvertOptions skip;
  skip.skip_bad_lines = true;
  auto minerva = convert_file(fixture("minerva.jsonl"), SourceFormat::math, skip);
  ASSERT_EQ(minerva.tasks.size(), 1u);
  EXPECT_EQ(minerva.tasks[0].answer.value(), "60") << "taken from the solution's \\boxed{}";
  ASSERT_EQ(minerva.errors.size(), 1u);
  EXPECT_EQ(minerva.errors[0].field, "solution");
}

TEST(SciKnowEvalConverter, ChoicesTrueFalseAndOpenAnswers) {
  auto result = convert_file(fixture("sciknoweval.jsonl"), SourceFormat::sciknoweval);
  ASSERT_EQ(result.tasks.size(), 3u);
  const Task& mcq = result.tasks[0];
  EXPECT_EQ(mcq.domain, "science");
  ASSERT_EQ(mcq.choices.size(), 4u);
  EXPECT_EQ(mcq.answer.value(), "B");
  EXPECT_NE(mcq.prompt.find("B. Carbon dioxide"), std::string::npos);
  const Task& tf = result.tasks[1];
  ASSERT_EQ(tf.choices.size(), 2u);
  EXPECT_EQ(tf.choices[0], "True") << "choices are reordered by label";
  EXPECT_EQ(tf.answer.value(), "A");
  const Task& open = result.tasks[2];
  EXPECT_TRUE(open.choices.empty());
  EXPECT_EQ(open.answer.value(), "newton");
  EXPECT_EQ(open.id, "sciknoweval/physics/2");
}

TEST(Converters, FormatNames) {
  EXPECT_EQ(source_format_from_string("LCB"), SourceFormat::livecodebench);
  EXPECT_EQ(source_format_from_string("aime"), SourceFormat::math);
  EXPECT_EQ(source_format_from_string("sciknoweval"), SourceFormat::sciknoweval);
  EXPECT_THROW(source_format_from_string("gsm9k"), std::invalid_argument);
  EXPECT_THROW(convert_record(nlohmann::json::array(), SourceFormat::math, 0), TaskError);
}
