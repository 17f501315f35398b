// Reasoning blocks in model responses. The graders grade a response without them, and a teacher
// reads a sibling's solution without them (DESIGN.md "Data flow", step 3).
#pragma once

#include <string>
#include <string_view>

namespace distil::common {

// Removes <think>...</think> blocks. A lone </think> before any <think> (the chat template
// already opened the block, as Qwen3's does with thinking on) ends the reasoning too: everything
// up to and including it goes. `unterminated` is set when a <think> never closes (the model ran
// out of tokens while reasoning); everything after it is dropped. Whitespace is kept.
std::string strip_think(std::string_view s, bool* unterminated = nullptr);

}  // namespace distil::common
