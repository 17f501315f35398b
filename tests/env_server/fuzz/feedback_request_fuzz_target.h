// The fuzzed path: raw bytes -> (Beast's HTTP request parser ->) JSON under limits -> feedback
// validation. Any ApiError is an expected rejection; anything else escaping is a bug.
#pragma once
#include <cstddef>
#include <cstdint>
namespace distil::env::fuzz {
// The first byte picks the entry: odd, the rest is a whole HTTP request; even, a request body.
void feedback_request_one_input(const std::uint8_t* data, std::size_t size);
}  // namespace distil::env::fuzz
