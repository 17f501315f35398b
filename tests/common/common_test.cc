// The helpers both the server side and the trainer use (common/).
#include <gtest/gtest.h>

#include <ctime>
#include <regex>

#include "common/cpu_info.h"
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

TEST(CpuInfo, ParsesModelIdentityAndKernelSelectingFlags) {
  const std::string text =
      "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
      "stepping\t: 1\nflags\t\t: fpu sse4_2 avx2 fma avx512f avx512_bf16 avx avx512bw\n\n"
      "processor\t: 1\nvendor_id\t: Other\nmodel name\t: Not The First\nflags\t\t: amx_tile\n";
  const CpuInfo cpu = parse_cpuinfo(text);
  EXPECT_EQ(cpu.model, "AMD EPYC");
  EXPECT_EQ(cpu.vendor, "AuthenticAMD");
  EXPECT_EQ(cpu.family, "26");
  EXPECT_EQ(cpu.model_number, "2");
  EXPECT_EQ(cpu.logical_cpus, 2);
  // Fixed order, only the kernel-selecting ones, the first processor's line only.
  EXPECT_EQ(isa_flags(cpu), "sse4_2 avx fma avx2 avx512f avx512bw avx512_bf16");
  EXPECT_EQ(cpu_description(cpu),
            "cpu: AMD EPYC (AuthenticAMD family 26 model 2 stepping 1), 2 logical CPUs; isa: sse4_2 avx fma avx2 avx512f "
            "avx512bw avx512_bf16");
  const CpuInfo none = parse_cpuinfo("garbage without colons\n");
  EXPECT_EQ(none.model, "unknown");
  EXPECT_EQ(isa_flags(none), "none");
  EXPECT_EQ(parse_cpuinfo("processor : 0\nFeatures : fp asimd sve bf16\n").isa,
            (std::vector<std::string>{"asimd", "sve", "bf16"}));
  EXPECT_FALSE(this_cpu().model.empty());
}

}  // namespace
}  // namespace distil::common
