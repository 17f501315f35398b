// Feedback sentences that more than one grader gives, worded once (internal to graders/).
#pragma once

#include <string>
#include <string_view>

namespace distil::graders::feedback {

// For a response with no final answer at all once its <think> blocks are removed: it was empty,
// or it ended inside an unclosed <think> block (`unterminated_think`: the model ran out of tokens
// while reasoning). `how_to_answer` is the grader's instruction for stating the answer, one
// sentence, e.g. "Put the final answer in \boxed{}.".
std::string empty_response(bool unterminated_think, std::string_view how_to_answer);

// Appended to a format problem when the response also ended inside an unclosed <think> block.
inline constexpr std::string_view kAlsoUnfinishedThink = " (The response also ended inside an unfinished <think> block.)";

}  // namespace distil::graders::feedback
