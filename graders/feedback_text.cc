#include "graders/feedback_text.h"

namespace distil::graders::feedback {

std::string empty_response(bool unterminated_think, std::string_view how_to_answer) {
  std::string out = unterminated_think
                        ? "The response ended inside its <think> block, so it never stated a final answer. "
                          "Reason more briefly. "
                        : "The response is empty: no final answer was found. ";
  out += how_to_answer;
  return out;
}

}  // namespace distil::graders::feedback
