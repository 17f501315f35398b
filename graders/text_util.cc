#include "graders/text_util.h"

#include <algorithm>
#include <cctype>

namespace distil::graders::text {

std::string trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) return false;
  }
  return true;
}

std::string truncate_utf8(std::string_view s, std::size_t max_chars, std::string_view marker) {
  if (s.size() <= max_chars) return std::string(s);
  std::size_t keep = max_chars > marker.size() ? max_chars - marker.size() : 0;
  while (keep > 0 && (static_cast<unsigned char>(s[keep]) & 0xC0) == 0x80) --keep;
  std::string out(s.substr(0, keep));
  out.append(marker.substr(0, max_chars - keep));
  return out;
}

namespace {
// Given the index of an opening '{', the index one past its matching '}' or npos.
std::size_t match_brace(std::string_view s, std::size_t open) {
  int depth = 0;
  for (std::size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {  // \{ and \} are literal braces
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    else if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}
}  // namespace

std::string last_boxed(std::string_view s, bool* found) {
  if (found) *found = false;
  // Candidate commands from the last one backwards; the first with a well-formed argument wins.
  std::size_t limit = s.size();
  while (true) {
    std::size_t a = s.rfind("\\boxed", limit);
    std::size_t b = s.rfind("\\fbox", limit);
    std::size_t at, len;
    if (a == std::string_view::npos && b == std::string_view::npos) return {};
    if (b == std::string_view::npos || (a != std::string_view::npos && a > b)) {
      at = a;
      len = 6;
    } else {
      at = b;
      len = 5;
    }
    std::size_t i = at + len;
    while (i < s.size() && s[i] == ' ') ++i;
    if (i < s.size() && s[i] == '{') {
      std::size_t end = match_brace(s, i);
      if (end != std::string_view::npos) {
        if (found) *found = true;
        return std::string(s.substr(i + 1, end - i - 2));
      }
    } else if (i > at + len && i < s.size()) {  // "\boxed 5": one token argument
      std::size_t j = i;
      while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j])) && s[j] != '$') ++j;
      if (found) *found = true;
      return std::string(s.substr(i, j - i));
    }
    if (at == 0) return {};
    limit = at - 1;
  }
}

std::string last_tag(std::string_view s, std::string_view tag, bool* found) {
  if (found) *found = false;
  std::string open = "<" + std::string(tag) + ">";
  std::string close = "</" + std::string(tag) + ">";
  std::string lower = to_lower(s);
  std::size_t start = lower.rfind(open);
  if (start == std::string::npos) return {};
  std::size_t end = lower.find(close, start + open.size());
  if (end == std::string::npos) return {};
  if (found) *found = true;
  return std::string(s.substr(start + open.size(), end - start - open.size()));
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  if (from.empty()) return s;
  std::size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

}  // namespace distil::graders::text

namespace distil::graders::text {

bool word_start(std::string_view s, std::size_t i) {
  return i == 0 || !(std::isalnum(static_cast<unsigned char>(s[i - 1])) || s[i - 1] == '_');
}
bool word_end(std::string_view s, std::size_t end) {
  return end >= s.size() || !(std::isalnum(static_cast<unsigned char>(s[end])) || s[end] == '_');
}

std::string after_answer_marker(std::string_view s, bool* found) {
  if (found) *found = false;
  const std::string lower = to_lower(s);
  std::size_t pos = lower.size();
  while (pos > 0) {
    std::size_t at = lower.rfind("answer", pos - 1);
    if (at == std::string::npos) break;
    pos = at;
    if (!word_start(lower, at)) continue;
    std::size_t i = at + 6;
    if (i < lower.size() && lower[i] == 's') ++i;  // "answers:"
    while (i < lower.size() && (lower[i] == ' ' || lower[i] == '*')) ++i;  // "**Answer:**"
    bool marker = false;
    if (i < lower.size() && (lower[i] == ':' || lower[i] == '=')) {
      ++i;
      marker = true;
    } else if (lower.compare(i, 3, "is ") == 0 || lower.compare(i, 3, "is:") == 0) {
      i += 2;
      if (i < lower.size() && lower[i] == ':') ++i;
      marker = true;
    } else if (lower.compare(i, 2, "\n") == 0) {
      marker = false;
    }
    if (!marker) continue;
    while (i < lower.size() && (lower[i] == ' ' || lower[i] == '*' || lower[i] == ':')) ++i;
    std::size_t end = lower.find('\n', i);
    if (end == std::string::npos) end = lower.size();
    if (end == i) {  // "Answer:\n\n42": the answer is on the next non-empty line
      std::size_t next = i;
      while (next < lower.size() && std::isspace(static_cast<unsigned char>(lower[next]))) ++next;
      if (next < lower.size()) {
        i = next;
        end = lower.find('\n', i);
        if (end == std::string::npos) end = lower.size();
      }
    }
    if (found) *found = true;
    return trim(s.substr(i, end - i));
  }
  return {};
}

}  // namespace distil::graders::text
