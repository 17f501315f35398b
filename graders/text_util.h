// Small text helpers shared by the graders (internal to graders/).
#pragma once

#include <string>
#include <string_view>

namespace distil::graders::text {

std::string trim(std::string_view s);
std::string to_lower(std::string_view s);
bool starts_with_ci(std::string_view s, std::string_view prefix);
// Cuts `s` to at most `max_chars` bytes on a UTF-8 boundary, marking the cut.
std::string truncate_utf8(std::string_view s, std::size_t max_chars, std::string_view marker = "...");
// Content of the last \boxed{...} or \fbox{...} (balanced braces); npos-safe, empty if none.
// `found` tells an empty box apart from no box.
std::string last_boxed(std::string_view s, bool* found = nullptr);
// Content of the last <tag>...</tag>; empty and found=false if none.
std::string last_tag(std::string_view s, std::string_view tag, bool* found = nullptr);
// Replaces every occurrence of `from` with `to`.
std::string replace_all(std::string s, std::string_view from, std::string_view to);

}  // namespace distil::graders::text

namespace distil::graders::text {
// Text after the last "answer is", "answer:" or "final answer" marker (case-insensitive), up to
// the end of that line; empty and found=false if the response has no such marker.
std::string after_answer_marker(std::string_view s, bool* found = nullptr);
// True if s[i] starts a word (previous char is not alphanumeric).
bool word_start(std::string_view s, std::size_t i);
bool word_end(std::string_view s, std::size_t end);
}  // namespace distil::graders::text
