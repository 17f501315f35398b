// Replays the fuzz corpus (the seeds and any crash reproducers saved there) through the fuzzed
// path in the ordinary build, so a fixed crash stays fixed even where libFuzzer is not built.
#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "tests/env_server/fuzz/feedback_request_fuzz_target.h"

TEST(EnvFuzzCorpus, EveryCorpusInputIsHandled) {
  const std::filesystem::path dir = std::string(DISTIL_SOURCE_DIR) + "/tests/env_server/fuzz/corpus";
  int inputs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(entry.path().string());
    distil::env::fuzz::feedback_request_one_input(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ++inputs;
  }
  EXPECT_GE(inputs, 5);
}
