// `distil-train chat-template`: renders a JSON messages file with a model's chat template and
// prints exactly the rendered text (no newline or anything else added), as
// apply_chat_template(messages, tokenize=False, ...) returns it.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "trainer/commands/cli.h"
#include "trainer/text/chat.h"
#include "trainer/text/jinja.h"
#include "trainer/text/tokenizer.h"

namespace distil::trainer {
namespace {

struct ChatTemplateOptions {
  std::string model_dir;
  std::string messages_file;
  std::string format = "auto";
  bool add_generation_prompt = false;
  std::string enable_thinking;  // "" = not passed (undefined to the template)
};

// The deepest nesting of [ and { outside strings: checked before parsing, since a hostile file of
// a million '[' would exhaust the stack when the parsed value is destroyed.
size_t json_nesting_depth(const std::string& text) {
  size_t depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

nlohmann::ordered_json read_messages(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot open messages file " + path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (json_nesting_depth(text) > 256)
    throw std::invalid_argument(path + ": JSON nests deeper than 256 levels");
  nlohmann::ordered_json messages;
  try {
    messages = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path + ": invalid JSON: " + e.what());
  }
  if (!messages.is_array())
    throw std::invalid_argument(path + ": expected a JSON array of message objects");
  for (size_t i = 0; i < messages.size(); ++i)
    if (!messages[i].is_object())
      throw std::invalid_argument(path + ": message " + std::to_string(i) + " is not an object");
  return messages;
}

int run_chat_template(const ChatTemplateOptions& o) {
  try {
    std::optional<bool> enable_thinking;
    if (o.enable_thinking == "true")
      enable_thinking = true;
    else if (o.enable_thinking == "false")
      enable_thinking = false;
    else if (!o.enable_thinking.empty())
      throw std::invalid_argument("--enable-thinking takes true or false, not \"" +
                                  o.enable_thinking + "\"");
    const auto messages = read_messages(o.messages_file);
    const auto tokenizer = text::Tokenizer::from_model_dir(o.model_dir);
    const auto format = text::ChatFormat::for_model(tokenizer, o.format);
    const std::string rendered =
        format.render_json(messages, o.add_generation_prompt, enable_thinking);
    std::cout.write(rendered.data(), static_cast<std::streamsize>(rendered.size()));
    std::cout.flush();
    return std::cout ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "chat-template: " << e.what() << '\n';
    return 2;
  }
}

}  // namespace

void add_chat_template_command(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ChatTemplateOptions>();
  auto* cmd = app.add_subcommand(
      "chat-template",
      "Render a JSON messages file with the model's chat template; prints exactly the text");
  cmd->add_option("--model", options->model_dir,
                  "Model directory (tokenizer.json, tokenizer_config.json)")
      ->required();
  cmd->add_option("--messages", options->messages_file,
                  "JSON array of message objects ({role, content, ...})")
      ->required();
  cmd->add_flag("--add-generation-prompt", options->add_generation_prompt,
                "Append the assistant turn's opening");
  cmd->add_option("--enable-thinking", options->enable_thinking,
                  "true or false: passed to the template as enable_thinking (default: not passed)");
  cmd->add_option(
      "--format", options->format,
      "auto (the model's own template), or a built-in format: chatml, llama3, olmo2 (OLMo 2's; also olmo), plain");
  cmd->callback([options, &exit_code] { exit_code = run_chat_template(*options); });
}

}  // namespace distil::trainer
