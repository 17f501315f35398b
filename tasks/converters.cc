// Public benchmark records -> task records. Source files are hostile like any input: every field
// is type-checked and errors name the source field.
#include "tasks/converters.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <unordered_map>

namespace distil::tasks {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Field lookup that tolerates the capitalisations datasets use ("Problem", "problem").
const nlohmann::json* field(const nlohmann::json& record, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    auto it = record.find(name);
    if (it != record.end() && !it->is_null()) return &*it;
  }
  for (const auto& [key, value] : record.items()) {
    for (const char* name : names) {
      if (lower(key) == lower(name) && !value.is_null()) return &value;
    }
  }
  return nullptr;
}

std::string string_field(const nlohmann::json& record, std::initializer_list<const char*> names, const std::string& label) {
  const nlohmann::json* v = field(record, names);
  if (!v) throw TaskError(label, "missing");
  if (v->is_string()) return v->get<std::string>();
  if (v->is_number_integer()) return std::to_string(v->get<long long>());
  if (v->is_number()) {
    std::ostringstream out;
    out << v->get<double>();
    return out.str();
  }
  throw TaskError(label, std::string("must be a string, got ") + v->type_name());
}

std::string identifier_text(const nlohmann::json* v) {
  if (!v) return {};
  if (v->is_string()) return v->get<std::string>();
  if (v->is_number_integer()) return std::to_string(v->get<long long>());
  return {};
}

std::string clean_id(std::string id) {
  for (auto& c : id) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '_';
  }
  if (id.size() > 200) id.resize(200);
  return id;
}

// The last \boxed{...} of a worked solution (balanced braces).
std::string last_boxed(const std::string& s) {
  std::size_t at = s.rfind("\\boxed");
  while (at != std::string::npos) {
    std::size_t i = at + 6;
    while (i < s.size() && s[i] == ' ') ++i;
    if (i < s.size() && s[i] == '{') {
      int depth = 0;
      for (std::size_t k = i; k < s.size(); ++k) {
        if (s[k] == '{') ++depth;
        else if (s[k] == '}' && --depth == 0) return s.substr(i + 1, k - i - 1);
      }
    }
    if (at == 0) break;
    at = s.rfind("\\boxed", at - 1);
  }
  return {};
}

// LiveCodeBench stores test lists as JSON text; private ones may be base64/zlib/pickle.
nlohmann::json lcb_tests(const nlohmann::json& value, const std::string& label) {
  if (value.is_array()) return value;
  if (!value.is_string()) throw TaskError(label, std::string("must be a JSON list or a string, got ") + value.type_name());
  const std::string text = value.get<std::string>();
  if (text.empty()) return nlohmann::json::array();
  try {
    nlohmann::json parsed = nlohmann::json::parse(text);
    if (parsed.is_array()) return parsed;
  } catch (const nlohmann::json::exception&) {
  }
  try {
    return nlohmann::json::parse(decode_lcb_compressed(text));
  } catch (const std::exception& e) {
    throw TaskError(label, std::string("neither JSON nor base64/zlib/pickle JSON: ") + e.what());
  }
}

Task convert_lcb(const nlohmann::json& r, std::size_t index, const ConvertOptions& options) {
  Task t;
  t.domain = "code";
  const std::string prefix = options.id_prefix.empty() ? "lcb" : options.id_prefix;
  std::string qid = identifier_text(field(r, {"question_id", "id", "task_id"}));
  t.id = clean_id(prefix + "/" + (qid.empty() ? std::to_string(index) : qid));
  const std::string content = string_field(r, {"question_content", "question", "prompt"}, "question_content");
  std::string starter;
  if (const auto* s = field(r, {"starter_code"})) {
    if (!s->is_string()) throw TaskError("starter_code", "must be a string");
    starter = s->get<std::string>();
  }
  nlohmann::json metadata = nlohmann::json::object();
  if (const auto* m = field(r, {"metadata"})) {
    nlohmann::json parsed = *m;
    if (m->is_string()) {
      try {
        parsed = m->get<std::string>().empty() ? nlohmann::json::object() : nlohmann::json::parse(m->get<std::string>());
      } catch (const nlohmann::json::exception&) {
        throw TaskError("metadata", "a string that is not JSON");
      }
    }
    if (!parsed.is_object()) throw TaskError("metadata", "must be an object (or its JSON text)");
    metadata = parsed;
  }
  for (const char* key : {"question_title", "platform", "contest_id", "contest_date", "difficulty"}) {
    if (const auto* v = field(r, {key}); v && (v->is_string() || v->is_number())) metadata[key] = *v;
  }
  if (!starter.empty()) metadata["starter_code"] = starter;
  metadata["source"] = "livecodebench";

  nlohmann::json tests = nlohmann::json::array();
  for (const char* key : {"public_test_cases", "private_test_cases"}) {
    const auto* v = field(r, {key});
    if (!v) continue;
    nlohmann::json list = lcb_tests(*v, key);
    if (!list.is_array()) throw TaskError(key, "must hold a list of tests");
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string where = std::string(key) + "[" + std::to_string(i) + "]";
      const auto& test = list[i];
      if (!test.is_object()) throw TaskError(where, "must be an object");
      TestCase tc;
      auto in = test.find("input");
      auto out = test.find("output");
      if (in == test.end() || !in->is_string()) throw TaskError(where + ".input", "missing or not a string");
      if (out == test.end() || !out->is_string()) throw TaskError(where + ".output", "missing or not a string");
      tc.input = in->get<std::string>();
      tc.output = out->get<std::string>();
      std::string type = test.value("testtype", test.value("type", std::string("stdin")));
      if (type == "functional") tc.type = TestType::functional;
      else if (type == "stdin") tc.type = TestType::stdin_io;
      else throw TaskError(where + ".testtype", "must be \"stdin\" or \"functional\", got \"" + type + "\"");
      t.tests.push_back(std::move(tc));
    }
  }
  if (t.tests.empty()) throw TaskError("public_test_cases", "the record has no tests");
  const bool functional = t.tests.front().type == TestType::functional;
  t.prompt = content;
  if (options.add_instructions) {
    if (functional || !starter.empty()) {
      t.prompt += "\n\nComplete the following starter code and return the whole solution in one ```python code block:\n```python\n" +
                  starter + "\n```";
    } else {
      t.prompt += "\n\nWrite a Python program that reads the input from stdin and writes the answer to stdout. "
                  "Return the whole program in one ```python code block.";
    }
  }
  metadata["prompt_style"] = functional ? "functional" : "stdin";
  t.metadata = metadata;
  // Re-validate through the one validator so converted tasks obey the same rules as task files.
  return task_from_json(to_json(t));
}

Task convert_math(const nlohmann::json& r, std::size_t index, const ConvertOptions& options) {
  Task t;
  t.domain = "math";
  const std::string prefix = options.id_prefix.empty() ? "math" : options.id_prefix;
  std::string id = identifier_text(field(r, {"unique_id", "id", "idx", "problem_id", "ID"}));
  t.id = clean_id(prefix + "/" + (id.empty() ? std::to_string(index) : id));
  t.prompt = string_field(r, {"problem", "question", "prompt", "Problem", "Question"}, "problem");
  std::string answer;
  if (field(r, {"answer", "final_answer", "expected_answer", "Answer"})) {
    answer = string_field(r, {"answer", "final_answer", "expected_answer", "Answer"}, "answer");
    // Some sets store the answer as a one-element list.
  } else if (const auto* solution = field(r, {"solution", "Solution"})) {
    if (!solution->is_string()) throw TaskError("solution", "must be a string");
    answer = last_boxed(solution->get<std::string>());
    if (answer.empty()) throw TaskError("solution", "has no \\boxed{} answer and the record has no answer field");
  } else {
    throw TaskError("answer", "missing (and no solution with a \\boxed{} answer)");
  }
  if (answer.empty()) throw TaskError("answer", "empty");
  t.answer = answer;
  if (options.add_instructions) t.prompt += "\n\nPlease reason step by step, and put your final answer within \\boxed{}.";
  for (const char* key : {"subject", "level", "type", "url", "year", "source"}) {
    if (const auto* v = field(r, {key}); v && (v->is_string() || v->is_number())) t.metadata[key] = *v;
  }
  if (const auto* solution = field(r, {"solution"}); solution && solution->is_string()) t.metadata["solution"] = *solution;
  return task_from_json(to_json(t));
}

Task convert_sciknoweval(const nlohmann::json& r, std::size_t index, const ConvertOptions& options) {
  Task t;
  t.domain = "science";
  const std::string prefix = options.id_prefix.empty() ? "sciknoweval" : options.id_prefix;
  std::string id = identifier_text(field(r, {"id", "uid"}));
  std::string subject = identifier_text(field(r, {"domain"}));
  t.id = clean_id(prefix + "/" + (subject.empty() ? "" : lower(subject) + "/") + (id.empty() ? std::to_string(index) : id));
  t.prompt = string_field(r, {"question", "prompt"}, "question");
  const std::string type = field(r, {"type"}) && field(r, {"type"})->is_string() ? field(r, {"type"})->get<std::string>() : "";
  const nlohmann::json* choices = field(r, {"choices"});
  if (choices && choices->is_object() && choices->contains("text") && !(*choices)["text"].empty()) {
    const auto& texts = (*choices)["text"];
    if (!texts.is_array()) throw TaskError("choices.text", "must be a list");
    nlohmann::json labels = choices->value("label", nlohmann::json::array());
    if (!labels.is_array() || (!labels.empty() && labels.size() != texts.size()))
      throw TaskError("choices.label", "must be a list as long as choices.text");
    if (texts.size() > 26) throw TaskError("choices.text", "more than 26 choices");
    // Order the choices by label so they read A, B, C, ... whatever order the record has.
    std::vector<std::pair<std::string, std::string>> labelled;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      if (!texts[i].is_string()) throw TaskError("choices.text[" + std::to_string(i) + "]", "must be a string");
      std::string label = labels.empty() ? std::string(1, static_cast<char>('A' + i)) : labels[i].is_string() ? labels[i].get<std::string>() : "";
      if (label.size() != 1 || !std::isalpha(static_cast<unsigned char>(label[0])))
        throw TaskError("choices.label[" + std::to_string(i) + "]", "must be a single letter");
      label[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(label[0])));
      labelled.emplace_back(label, texts[i].get<std::string>());
    }
    std::sort(labelled.begin(), labelled.end());
    for (std::size_t i = 0; i < labelled.size(); ++i) {
      if (labelled[i].first[0] != static_cast<char>('A' + i))
        throw TaskError("choices.label", "labels must be A, B, C, ... without gaps");
      t.choices.push_back(labelled[i].second);
    }
    std::string key = string_field(r, {"answerKey", "answer_key"}, "answerKey");
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
    if (key.size() != 1 || std::toupper(static_cast<unsigned char>(key[0])) - 'A' < 0 ||
        static_cast<std::size_t>(std::toupper(static_cast<unsigned char>(key[0])) - 'A') >= t.choices.size())
      throw TaskError("answerKey", "must be the label of one of the choices");
    t.answer = std::string(1, static_cast<char>(std::toupper(static_cast<unsigned char>(key[0]))));
    if (options.add_instructions) {
      t.prompt += "\n";
      for (std::size_t i = 0; i < t.choices.size(); ++i) t.prompt += "\n" + std::string(1, static_cast<char>('A' + i)) + ". " + t.choices[i];
      t.prompt += "\n\nEnd your response with \"Answer: X\", where X is the letter of the correct option.";
    }
  } else {
    std::string answer;
    if (field(r, {"answer"})) answer = string_field(r, {"answer"}, "answer");
    else answer = string_field(r, {"answerKey"}, "answerKey");
    if (answer.empty()) throw TaskError("answer", "empty");
    t.answer = answer;
    if (options.add_instructions) t.prompt += "\n\nEnd your response with \"Answer: <your answer>\".";
  }
  if (!type.empty()) t.metadata["type"] = type;
  if (!subject.empty()) t.metadata["subject"] = subject;
  if (const auto* details = field(r, {"details"}); details && details->is_object()) t.metadata["details"] = *details;
  t.metadata["source"] = "sciknoweval";
  return task_from_json(to_json(t));
}

}  // namespace

SourceFormat source_format_from_string(const std::string& name) {
  const std::string n = lower(name);
  if (n == "lcb" || n == "livecodebench") return SourceFormat::livecodebench;
  if (n == "math" || n == "math500" || n == "math-500" || n == "aime" || n == "amc" || n == "hmmt" || n == "minerva")
    return SourceFormat::math;
  if (n == "sciknoweval" || n == "science") return SourceFormat::sciknoweval;
  throw std::invalid_argument("unknown format \"" + name + "\" (expected lcb, math, aime, amc, hmmt, minerva, math500, sciknoweval)");
}

Task convert_record(const nlohmann::json& record, SourceFormat format, std::size_t index, const ConvertOptions& options) {
  if (!record.is_object()) throw TaskError("record", std::string("must be a JSON object, got ") + record.type_name());
  switch (format) {
    case SourceFormat::livecodebench: return convert_lcb(record, index, options);
    case SourceFormat::math: return convert_math(record, index, options);
    case SourceFormat::sciknoweval: return convert_sciknoweval(record, index, options);
  }
  throw TaskError("format", "unknown");
}

LoadResult convert_file(const std::string& path, SourceFormat format, const ConvertOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  LoadResult result;
  std::unordered_map<std::string, std::size_t> line_of_id;
  auto handle = [&](const nlohmann::json& record, std::size_t line, std::size_t index) {
    try {
      Task t = convert_record(record, format, index, options);
      auto [it, inserted] = line_of_id.emplace(t.id, line);
      if (!inserted) throw TaskError("id", "duplicate id \"" + t.id + "\" (first on line " + std::to_string(it->second) + ")");
      result.tasks.push_back(std::move(t));
    } catch (const TaskError& e) {
      std::string what = e.what();
      LoadError error{path, line, e.field(), what.substr(std::min(what.size(), e.field().size() + 2))};
      if (!options.skip_bad_lines) throw std::runtime_error(error.to_string());
      result.errors.push_back(std::move(error));
    }
  };
  // A JSON array file (as some datasets ship) or JSONL.
  char first = 0;
  while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
  }
  in.clear();
  in.seekg(0);
  if (first == '[') {
    nlohmann::json all;
    try {
      all = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(path + ": not valid JSON (" + e.what() + ")");
    }
    for (std::size_t i = 0; i < all.size(); ++i) handle(all[i], i + 1, i);
    return result;
  }
  std::string line;
  std::size_t line_number = 0, index = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      LoadError error{path, line_number, "json", std::string("not valid JSON (") + e.what() + ")"};
      if (!options.skip_bad_lines) throw std::runtime_error(error.to_string());
      result.errors.push_back(std::move(error));
      continue;
    }
    handle(record, line_number, index++);
  }
  return result;
}

}  // namespace distil::tasks
