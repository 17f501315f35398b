#include "tests/env_server/fuzz/feedback_request_fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  distil::env::fuzz::feedback_request_one_input(data, size);
  return 0;
}
