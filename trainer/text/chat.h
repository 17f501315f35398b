// Chat formats: the exact strings the chat templates of the supported families produce (see
// docs/model.md for the strings, tests/model/chat_test.cc for the template-derived examples).
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace distil::text {

struct ChatMessage {
  std::string role;  // system | user | assistant | tool
  std::string content;
};

enum class ChatFormatKind { chatml, llama3, olmo, plain };

class ChatFormat {
 public:
  explicit ChatFormat(ChatFormatKind kind = ChatFormatKind::chatml);
  // "chatml" (also "qwen", "qwen3"), "llama3", "olmo" ("olmo2"), "plain"; throws
  // std::invalid_argument naming the unknown format.
  static ChatFormat from_name(std::string_view name);

  // chatml: Qwen3's template (no tools): "<|im_start|>{role}\n{content}<|im_end|>\n" per message,
  //   generation prompt "<|im_start|>assistant\n", plus "<think>\n\n</think>\n\n" when
  //   enable_thinking is false; assistant turns before the last user turn lose their <think> part.
  // llama3: "<|begin_of_text|>" then "<|start_header_id|>{role}<|end_header_id|>\n\n{trimmed}<|eot_id|>",
  //   generation prompt "<|start_header_id|>assistant<|end_header_id|>\n\n".
  // olmo: OLMo 2 instruct: "<|endoftext|>" then "<|{role}|>\n{content}\n" (assistant:
  //   "<|assistant|>\n{content}<|endoftext|>" plus "\n" unless last), generation prompt
  //   "<|assistant|>\n".
  // plain: contents joined by "\n\n"; the generation prompt adds "\n\n" after a non-empty text.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     bool enable_thinking = true) const;

  ChatFormatKind kind() const { return kind_; }
  std::string_view name() const;
  // The text that ends an assistant turn ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "").
  std::string_view end_of_turn() const;

 private:
  ChatFormatKind kind_;
};

// Picks the format a Jinja chat template implements ("" or unknown -> plain).
ChatFormatKind detect_chat_format(std::string_view chat_template);

}  // namespace distil::text
