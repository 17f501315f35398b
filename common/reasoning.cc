#include "common/reasoning.h"

namespace distil::common {

std::string strip_think(std::string_view s, bool* unterminated) {
  constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  if (unterminated) *unterminated = false;
  std::string out;
  out.reserve(s.size());
  std::size_t pos = 0;
  // A lone </think> without an opening tag before it (chat templates that pre-fill "<think>")
  // ends the reasoning part: keep only what follows it.
  const std::size_t open = s.find(kOpen);
  const std::size_t close = s.find(kClose);
  if (close != std::string_view::npos && (open == std::string_view::npos || close < open)) pos = close + kClose.size();
  while (pos < s.size()) {
    const std::size_t start = s.find(kOpen, pos);
    if (start == std::string_view::npos) {
      out.append(s.substr(pos));
      break;
    }
    out.append(s.substr(pos, start - pos));
    const std::size_t end = s.find(kClose, start + kOpen.size());
    if (end == std::string_view::npos) {
      if (unterminated) *unterminated = true;
      break;
    }
    pos = end + kClose.size();
  }
  return out;
}

}  // namespace distil::common
