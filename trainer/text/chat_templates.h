// The Jinja sources of the built-in chat formats (see trainer/text/chat_templates.cc).
#pragma once

namespace distil::text {
extern const char* const kQwen3ChatTemplate;    // chat_format "chatml"
extern const char* const kLlama31ChatTemplate;  // chat_format "llama3"
extern const char* const kOlmo2ChatTemplate;    // chat_format "olmo2" (also "olmo")
extern const char* const kPlainChatTemplate;    // chat_format "plain"
}  // namespace distil::text
