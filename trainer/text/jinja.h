// A Jinja engine for Hugging Face chat templates: the subset and the semantics of
// @huggingface/jinja (the engine transformers.js' apply_chat_template uses), which is the
// reference the conformance test compares against byte for byte. Templates are parsed once and
// rendered with a JSON context. See docs/model.md ("Chat templates") for what is supported and
// where this (like @huggingface/jinja) differs from Python Jinja.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace distil::text::jinja {

// A template that cannot be parsed, uses a construct this engine does not support, or fails while
// rendering (type errors, limits). The message names the construct and the template line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The template called raise_exception(message); message() is the template's own text.
class RaisedException : public Error {
 public:
  RaisedException(const std::string& message, int line);
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// Bounds on the work one render may do, so a hostile template cannot hang or exhaust memory.
struct Limits {
  size_t max_output_bytes = size_t{64} << 20;  // also bounds every string and list built
  int max_depth = 256;                         // nested calls, blocks and expressions
  uint64_t max_steps = 20'000'000;             // evaluated nodes and loop iterations
};

class Template {
 public:
  // Parses `source` as transformers.js does (trim_blocks and lstrip_blocks on, one trailing
  // newline dropped, {% generation %} tags removed). Throws Error naming the problem and line.
  explicit Template(std::string_view source);
  ~Template();
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;

  // `context` is an object (or null: no variables); its keys are the template's variables
  // (messages, add_generation_prompt, bos_token, ...). An absent key is undefined to the template.
  std::string render(const nlohmann::ordered_json& context, const Limits& limits = {}) const;

  struct Program;  // the parsed template (trainer/text/jinja_ast.h)

 private:
  std::unique_ptr<Program> program_;
};

}  // namespace distil::text::jinja
