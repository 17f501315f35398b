// Chat formats: a model's own Jinja chat template, rendered as transformers.js'
// apply_chat_template renders it (trainer/text/jinja.h), or one of the built-in formats, which
// are templates too (trainer/text/chat_templates.cc). See docs/model.md ("Chat templates").
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::text {

class Tokenizer;
namespace jinja {
class Template;
}

struct ChatMessage {
  std::string role;  // system | user | assistant | tool (the template decides what it accepts)
  std::string content;
};

class ChatFormat {
 public:
  // A Jinja chat template. `special_tokens` (name, text), e.g. ("bos_token", "<s>"), become
  // template variables. Throws jinja::Error naming the problem when the template does not parse.
  static ChatFormat from_template(std::string_view source,
                                  std::vector<std::pair<std::string, std::string>> special_tokens,
                                  std::string name = "model");
  // A built-in format: "chatml" (also "qwen", "qwen3"): Qwen3's template, eos <|im_end|>;
  // "llama3" ("llama"): Llama 3.1 Instruct's, bos <|begin_of_text|>, eos <|eot_id|>;
  // "olmo2" ("olmo"): OLMo 2 Instruct's, bos and eos <|endoftext|> (OLMo 3 Instruct models ship
  // their own ChatML-style template: auto); "plain" ("none"): contents
  // joined by blank lines. Throws std::invalid_argument naming an unknown format.
  static ChatFormat from_name(std::string_view name);
  // `choice` "auto": the model's own template with its special tokens (throws
  // std::invalid_argument when the model ships none: nothing is guessed); otherwise from_name.
  static ChatFormat for_model(const Tokenizer& tokenizer, std::string_view choice);

  // Renders {role, content} messages with enable_thinking set (true or false).
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     bool enable_thinking = true) const;
  // Renders a JSON array of message objects carrying any field the template reads
  // (reasoning_content, tool_calls, ...); enable_thinking nullopt leaves it undefined, as
  // apply_chat_template does when it is not passed. Throws jinja::Error (and
  // jinja::RaisedException for the template's raise_exception).
  std::string render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                          std::optional<bool> enable_thinking = std::nullopt) const;

  // "model" for a model's template, else the built-in format's name.
  const std::string& name() const { return name_; }
  // The text that ends an assistant turn ("<|im_end|>", "<|eot_id|>", ...; "" for plain): what
  // the template writes right after an assistant message, when that starts with the eos token or
  // a <...> marker; else the eos token. Generation stops there.
  const std::string& end_of_turn() const { return end_of_turn_; }
  const std::string& source() const { return source_; }

 private:
  ChatFormat() = default;
  std::string find_end_of_turn() const;

  std::shared_ptr<const jinja::Template> template_;
  std::string name_, source_, end_of_turn_;
  std::vector<std::pair<std::string, std::string>> special_tokens_;
};

}  // namespace distil::text
