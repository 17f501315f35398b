// Chat formats: every format is a Jinja template rendered by trainer/text/jinja.h with the
// variables transformers.js' apply_chat_template passes (messages, add_generation_prompt, the
// special tokens, enable_thinking when given).
#include "trainer/text/chat.h"

#include <stdexcept>

#include "trainer/text/chat_templates.h"
#include "trainer/text/jinja.h"
#include "trainer/text/tokenizer.h"

namespace distil::text {

ChatFormat ChatFormat::from_template(
    std::string_view source, std::vector<std::pair<std::string, std::string>> special_tokens,
    std::string name) {
  ChatFormat f;
  f.template_ = std::make_shared<const jinja::Template>(source);
  f.source_ = std::string(source);
  f.name_ = std::move(name);
  f.special_tokens_ = std::move(special_tokens);
  f.end_of_turn_ = f.find_end_of_turn();
  return f;
}

ChatFormat ChatFormat::from_name(std::string_view name) {
  if (name == "chatml" || name == "qwen" || name == "qwen3")
    return from_template(kQwen3ChatTemplate, {{"eos_token", "<|im_end|>"}}, "chatml");
  if (name == "llama3" || name == "llama")
    return from_template(kLlama31ChatTemplate,
                         {{"bos_token", "<|begin_of_text|>"}, {"eos_token", "<|eot_id|>"}},
                         "llama3");
  // OLMo 2 Instruct's format; "olmo" is its older name. OLMo 3 Instruct models ship a ChatML-style
  // template of their own: use auto (or chatml) for them.
  if (name == "olmo2" || name == "olmo")
    return from_template(kOlmo2ChatTemplate,
                         {{"bos_token", "<|endoftext|>"}, {"eos_token", "<|endoftext|>"}}, "olmo2");
  if (name == "plain" || name == "none") return from_template(kPlainChatTemplate, {}, "plain");
  throw std::invalid_argument("unknown chat format \"" + std::string(name) +
                              "\" (expected auto, chatml, llama3, olmo2 or plain)");
}

ChatFormat ChatFormat::for_model(const Tokenizer& tokenizer, std::string_view choice) {
  if (choice != "auto") return from_name(choice);
  if (tokenizer.chat_template().empty())
    throw std::invalid_argument(
        "chat_format \"auto\": the model has no chat template (no chat_template in "
        "tokenizer_config.json and no "
        "chat_template.jinja); choose one of chatml, llama3, olmo2 or plain explicitly");
  try {
    return from_template(tokenizer.chat_template(), tokenizer.special_token_texts(), "model");
  } catch (const jinja::Error& e) {
    throw std::invalid_argument(std::string("the model's chat template: ") + e.what());
  }
}

std::string ChatFormat::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                               bool enable_thinking) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  return render_json(list, add_generation_prompt, enable_thinking);
}

std::string ChatFormat::render_json(const nlohmann::ordered_json& messages,
                                    bool add_generation_prompt,
                                    std::optional<bool> enable_thinking) const {
  if (!messages.is_array()) throw std::invalid_argument("chat messages must be a JSON array");
  nlohmann::ordered_json context = {{"messages", messages},
                                    {"add_generation_prompt", add_generation_prompt}};
  for (const auto& [name, text] : special_tokens_) context[name] = text;
  if (enable_thinking) context["enable_thinking"] = *enable_thinking;
  return template_->render(context);
}

std::string ChatFormat::find_end_of_turn() const {
  std::string eos;
  for (const auto& [name, text] : special_tokens_)
    if (name == "eos_token") eos = text;
  // Render a short exchange and look at what follows the assistant's text.
  static constexpr std::string_view kProbe = "\x01probe-answer\x01";
  std::string rendered;
  try {
    rendered = render({{"user", "probe question"}, {"assistant", std::string(kProbe)}}, false);
  } catch (const std::exception&) {
    return eos;  // the template refuses the probe (e.g. demands a system turn)
  }
  const size_t at = rendered.rfind(kProbe);
  if (at == std::string::npos) return eos;
  const std::string after = rendered.substr(at + kProbe.size());
  if (!eos.empty() && after.compare(0, eos.size(), eos) == 0) return eos;
  if (after.size() > 2 && after[0] == '<') {
    const size_t close = after.find('>');
    if (close != std::string::npos && close < 64 && after.find_first_of(" \t\n", 0) > close)
      return after.substr(0, close + 1);
  }
  return after.empty() ? std::string() : eos;
}

}  // namespace distil::text
