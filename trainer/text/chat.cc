// Chat formats, written to produce exactly what each family's Jinja chat_template produces (the
// templates are quoted in docs/model.md; tests/model/chat_test.cc derives examples from them).
#include "trainer/text/chat.h"

#include <stdexcept>

namespace distil::text {
namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}
std::string_view lstrip(std::string_view s, std::string_view chars) {
  const size_t b = s.find_first_not_of(chars);
  return b == std::string_view::npos ? std::string_view{} : s.substr(b);
}
std::string_view rstrip(std::string_view s, std::string_view chars) {
  const size_t e = s.find_last_not_of(chars);
  return e == std::string_view::npos ? std::string_view{} : s.substr(0, e + 1);
}
std::string_view strip(std::string_view s, std::string_view chars) { return lstrip(rstrip(s, chars), chars); }
constexpr std::string_view kJinjaWhitespace = " \t\n\r\v\f";

void check_role(const ChatMessage& m, bool allow_tool) {
  if (m.role == "system" || m.role == "user" || m.role == "assistant" || (allow_tool && m.role == "tool")) return;
  throw std::invalid_argument("chat message role \"" + m.role + "\" is not supported by this chat format");
}

// Qwen3's chat_template without tool definitions (tool results are supported).
std::string render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt, bool enable_thinking) {
  std::string out;
  const size_t n = messages.size();
  for (const auto& m : messages) check_role(m, true);
  if (n > 0 && messages[0].role == "system") out += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  // The last user turn that is not a wrapped tool response; later assistant turns keep <think>.
  size_t last_query = n == 0 ? 0 : n - 1;
  for (size_t k = n; k-- > 0;) {
    const auto& c = messages[k].content;
    if (messages[k].role == "user" && !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>"))) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const auto& m = messages[i];
    const bool last = i + 1 == n;
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string_view content = m.content, reasoning;
      if (const size_t close_last = content.rfind("</think>"); close_last != std::string_view::npos) {
        const std::string_view full = m.content;
        content = lstrip(full.substr(close_last + 8), "\n");
        std::string_view before = rstrip(full.substr(0, full.find("</think>")), "\n");
        if (const size_t open = before.rfind("<think>"); open != std::string_view::npos) before = before.substr(open + 7);
        reasoning = lstrip(before, "\n");
      }
      if (i > last_query && (last || !reasoning.empty())) {
        out += "<|im_start|>assistant\n<think>\n";
        out += strip(reasoning, "\n");
        out += "\n</think>\n\n";
        out += lstrip(content, "\n");
      } else {
        out += "<|im_start|>assistant\n";
        out += content;
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (last || messages[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

// Meta Llama 3 Instruct.
std::string render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    check_role(messages[i], true);
    if (i == 0) out += "<|begin_of_text|>";
    out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n";
    out += strip(messages[i].content, kJinjaWhitespace);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// OLMo 2 Instruct.
std::string render_olmo(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out = "<|endoftext|>";
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    check_role(m, false);
    const bool last = i + 1 == messages.size();
    if (m.role == "system") {
      out += "<|system|>\n" + m.content + "\n";
    } else if (m.role == "user") {
      out += "<|user|>\n" + m.content + "\n";
    } else {
      out += "<|assistant|>\n" + m.content + "<|endoftext|>";
      if (!last) out += "\n";
    }
    if (last && add_generation_prompt) out += "<|assistant|>\n";
  }
  return out;
}

std::string render_plain(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (const auto& m : messages) {
    check_role(m, true);
    if (!out.empty()) out += "\n\n";
    out += m.content;
  }
  if (add_generation_prompt && !out.empty() && (messages.empty() || messages.back().role != "assistant")) out += "\n\n";
  return out;
}

}  // namespace

ChatFormat::ChatFormat(ChatFormatKind kind) : kind_(kind) {}

ChatFormat ChatFormat::from_name(std::string_view name) {
  if (name == "chatml" || name == "qwen" || name == "qwen3" || name == "olmo3") return ChatFormat(ChatFormatKind::chatml);
  if (name == "llama3" || name == "llama") return ChatFormat(ChatFormatKind::llama3);
  if (name == "olmo" || name == "olmo2") return ChatFormat(ChatFormatKind::olmo);
  if (name == "plain" || name == "none") return ChatFormat(ChatFormatKind::plain);
  throw std::invalid_argument("unknown chat format \"" + std::string(name) +
                              "\" (expected chatml, llama3, olmo or plain)");
}

std::string ChatFormat::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                               bool enable_thinking) const {
  switch (kind_) {
    case ChatFormatKind::chatml: return render_chatml(messages, add_generation_prompt, enable_thinking);
    case ChatFormatKind::llama3: return render_llama3(messages, add_generation_prompt);
    case ChatFormatKind::olmo: return render_olmo(messages, add_generation_prompt);
    case ChatFormatKind::plain: return render_plain(messages, add_generation_prompt);
  }
  return {};
}

std::string_view ChatFormat::name() const {
  switch (kind_) {
    case ChatFormatKind::chatml: return "chatml";
    case ChatFormatKind::llama3: return "llama3";
    case ChatFormatKind::olmo: return "olmo";
    case ChatFormatKind::plain: return "plain";
  }
  return "plain";
}

std::string_view ChatFormat::end_of_turn() const {
  switch (kind_) {
    case ChatFormatKind::chatml: return "<|im_end|>";
    case ChatFormatKind::llama3: return "<|eot_id|>";
    case ChatFormatKind::olmo: return "<|endoftext|>";
    case ChatFormatKind::plain: return "";
  }
  return "";
}

ChatFormatKind detect_chat_format(std::string_view tpl) {
  if (tpl.find("<|im_start|>") != std::string_view::npos) return ChatFormatKind::chatml;
  if (tpl.find("<|start_header_id|>") != std::string_view::npos) return ChatFormatKind::llama3;
  if (tpl.find("<|assistant|>") != std::string_view::npos) return ChatFormatKind::olmo;
  return ChatFormatKind::plain;
}

}  // namespace distil::text
