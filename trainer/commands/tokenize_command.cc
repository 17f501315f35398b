// `distil-train tokenize`: UTF-8 text on stdin -> JSON array of token ids (or the reverse).
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "trainer/commands/cli.h"
#include "trainer/text/chat.h"
#include "trainer/text/tokenizer.h"

namespace distil::trainer {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  bool decode = false;
  bool chat = false;
  bool no_thinking = false;
  bool plain_special = false;
  bool skip_special = false;
  std::string format;
};

// --chat input: a JSON array of {"role", "content"} messages, or plain text as one user message.
std::vector<text::ChatMessage> parse_messages(const std::string& input) {
  const auto first = input.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && input[first] == '[') {
    const auto j = nlohmann::json::parse(input, nullptr, false);
    if (!j.is_discarded() && j.is_array()) {
      std::vector<text::ChatMessage> messages;
      for (size_t i = 0; i < j.size(); ++i) {
        const auto& m = j[i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
            !m["content"].is_string())
          throw std::invalid_argument("message " + std::to_string(i) + " needs string \"role\" and \"content\"");
        messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
      return messages;
    }
  }
  return {{"user", input}};
}

int run_tokenize(const TokenizeOptions& o) {
  try {
    const auto tokenizer = text::Tokenizer::from_model_dir(o.model_dir);
    const std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    if (o.decode) {
      const auto j = nlohmann::json::parse(input, nullptr, false);
      if (j.is_discarded() || !j.is_array()) throw std::invalid_argument("--decode expects a JSON array of token ids");
      std::vector<int32_t> ids;
      for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_number_integer() || j[i].get<int64_t>() < 0 || j[i].get<int64_t>() >= tokenizer.vocab_size())
          throw std::invalid_argument("element " + std::to_string(i) + " is not a token id in [0, " +
                                      std::to_string(tokenizer.vocab_size()) + ")");
        ids.push_back(static_cast<int32_t>(j[i].get<int64_t>()));
      }
      std::cout << tokenizer.decode(ids, o.skip_special);
      return 0;
    }
    std::string text = input;
    if (o.chat) {
      const auto format = text::ChatFormat::for_model(tokenizer, o.format.empty() ? "auto" : o.format);
      text = format.render(parse_messages(input), /*add_generation_prompt=*/true, !o.no_thinking);
    }
    std::cout << nlohmann::json(tokenizer.encode(text, !o.plain_special)).dump() << '\n';
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tokenize: " << e.what() << '\n';
    return 2;
  }
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand("tokenize", "Encode UTF-8 stdin to a JSON array of token ids (or --decode)");
  cmd->add_option("--model", options->model_dir, "Model directory with tokenizer.json")->required();
  cmd->add_flag("--decode", options->decode, "Read a JSON array of ids and print the text");
  cmd->add_flag("--chat", options->chat,
                "Apply the chat format first (stdin: text as one user message, or a JSON array of messages)");
  cmd->add_option("--format", options->format, "Chat format: auto (the model's own template), chatml, llama3, olmo2 (OLMo 2's; also olmo), plain (default: auto)");
  cmd->add_flag("--no-thinking", options->no_thinking, "With --chat: enable_thinking=false (Qwen3)");
  cmd->add_flag("--no-special", options->plain_special, "Encode special-token text as ordinary text");
  cmd->add_flag("--skip-special", options->skip_special, "With --decode: leave special tokens out");
  cmd->callback([options, &exit_code] { exit_code = run_tokenize(*options); });
}

}  // namespace distil::trainer
