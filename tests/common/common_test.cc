// The helpers both the server side and the trainer use (common/).
#include <gtest/gtest.h>

#include <ctime>
#include <regex>

#include "common/reasoning.h"
#include "common/timestamp.h"

namespace distil::common {
namespace {

TEST(StripThink, RemovesBlocksAndFlagsAnUnclosedOne) {
  bool unterminated = true;
  EXPECT_EQ(strip_think("a<think>x</think>b<think>y</think>c", &unterminated), "abc");
  EXPECT_FALSE(unterminated);
  EXPECT_EQ(strip_think("start <think>never closed", &unterminated), "start ");
  EXPECT_TRUE(unterminated);
  EXPECT_EQ(strip_think("no reasoning at all", &unterminated), "no reasoning at all");
  EXPECT_FALSE(unterminated);
  EXPECT_EQ(strip_think(""), "");
}

// Qwen3's chat template opens <think> itself, so the response starts inside the block.
TEST(StripThink, LeadingLoneCloseTagEndsTheReasoning) {
  EXPECT_EQ(strip_think("reasoning \\boxed{13}\n</think>\n\nThe answer is 12."), "\n\nThe answer is 12.");
  EXPECT_EQ(strip_think("</think>x"), "x");
  EXPECT_EQ(strip_think("r</think>a<think>y</think>b"), "ab");
  bool unterminated = false;
  EXPECT_EQ(strip_think("r</think>a<think>cut", &unterminated), "a");
  EXPECT_TRUE(unterminated);
  // A </think> after an opening tag closes that block, as usual.
  EXPECT_EQ(strip_think("a<think>x</think>b</think>c"), "ab</think>c");
}

TEST(Timestamp, BothStylesWithMilliseconds) {
  // 2026-11-23T04:10:00.123Z
  const auto t = std::chrono::system_clock::from_time_t(1795407000) + std::chrono::milliseconds(123);
  EXPECT_EQ(format_timestamp(t, TimestampStyle::iso8601_utc), "2026-11-23T04:10:00.123Z");
  const std::string local = format_timestamp(t, TimestampStyle::log_local);
  EXPECT_TRUE(std::regex_match(local, std::regex(R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.123)"))) << local;
  std::tm tm{};
  const std::time_t seconds = 1795407000;
  localtime_r(&seconds, &tm);
  char expected[32];
  std::strftime(expected, sizeof expected, "%Y-%m-%d %H:%M:%S.123", &tm);
  EXPECT_EQ(local, expected);
  EXPECT_EQ(format_timestamp(std::chrono::system_clock::from_time_t(1795407000), TimestampStyle::iso8601_utc),
            "2026-11-23T04:10:00.000Z");
}

}  // namespace
}  // namespace distil::common
