// Internal UTF-8 helpers shared by the tokenizer sources (not a public interface).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace distil::text {
// Decodes one well-formed UTF-8 character at `pos`; returns its length, or 0 if invalid.
size_t utf8_decode_one(std::string_view s, size_t pos, char32_t& cp);
void utf8_append(std::string& out, char32_t cp);
// Replaces each maximal invalid subsequence by U+FFFD.
std::string utf8_replace_invalid(std::string_view s);
}  // namespace distil::text
