// Task record validation and the JSONL loader. Task files come from users and public datasets, so
// every field is checked and every error names the field (and the line, when loading a file).
#include "tasks/task.h"

#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

namespace distil::tasks {
namespace {

constexpr std::size_t kMaxIdChars = 256;
constexpr std::size_t kMaxLineBytes = 64u << 20;  // a task with big hidden tests can be large

const char* json_type_name(const nlohmann::json& j) { return j.type_name(); }

std::string require_string(const nlohmann::json& j, const std::string& field, bool allow_empty) {
  if (!j.is_string()) throw TaskError(field, std::string("must be a string, got ") + json_type_name(j));
  std::string s = j.get<std::string>();
  if (!allow_empty && s.empty()) throw TaskError(field, "must not be empty");
  return s;
}

void check_identifier(const std::string& value, const std::string& field) {
  if (value.size() > kMaxIdChars) throw TaskError(field, "longer than " + std::to_string(kMaxIdChars) + " characters");
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) throw TaskError(field, "contains a control character");
  }
}

// Answers in public datasets are sometimes JSON numbers (AIME: 204); the grader compares text.
std::string answer_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_integer()) return std::to_string(j.get<long long>());
  if (j.is_number_unsigned()) return std::to_string(j.get<unsigned long long>());
  if (j.is_number_float()) {
    std::ostringstream out;
    out.precision(17);
    out << j.get<double>();
    return out.str();
  }
  throw TaskError("answer", std::string("must be a string or a number, got ") + json_type_name(j));
}

TestCase test_from_json(const nlohmann::json& j, const std::string& field) {
  if (!j.is_object()) throw TaskError(field, std::string("must be an object, got ") + json_type_name(j));
  TestCase test;
  bool has_input = false, has_output = false;
  for (const auto& [key, value] : j.items()) {
    const std::string sub = field + "." + key;
    if (key == "input") {
      test.input = require_string(value, sub, true);
      has_input = true;
    } else if (key == "output") {
      test.output = require_string(value, sub, true);
      has_output = true;
    } else if (key == "type" || key == "testtype") {
      std::string type = require_string(value, sub, false);
      if (type == "stdin") test.type = TestType::stdin_io;
      else if (type == "functional") test.type = TestType::functional;
      else throw TaskError(sub, "must be \"stdin\" or \"functional\", got \"" + type + "\"");
    } else {
      throw TaskError(key.empty() ? field + ".\"\"" : sub, "unknown field (expected input, output, type)");
    }
  }
  if (!has_input) throw TaskError(field + ".input", "missing");
  if (!has_output) throw TaskError(field + ".output", "missing");
  return test;
}

}  // namespace

Task task_from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw TaskError("task", std::string("must be a JSON object, got ") + json_type_name(j));
  Task task;
  bool has_id = false, has_domain = false, has_prompt = false;
  for (const auto& [key, value] : j.items()) {
    if (key == "id") {
      task.id = require_string(value, "id", false);
      check_identifier(task.id, "id");
      has_id = true;
    } else if (key == "domain") {
      task.domain = require_string(value, "domain", false);
      check_identifier(task.domain, "domain");
      has_domain = true;
    } else if (key == "prompt") {
      task.prompt = require_string(value, "prompt", false);
      has_prompt = true;
    } else if (key == "answer") {
      if (!value.is_null()) task.answer = answer_text(value);
    } else if (key == "choices") {
      if (!value.is_array()) throw TaskError("choices", std::string("must be an array of strings, got ") + json_type_name(value));
      if (value.size() > 26) throw TaskError("choices", "at most 26 choices (labels A..Z)");
      for (std::size_t i = 0; i < value.size(); ++i) {
        task.choices.push_back(require_string(value[i], "choices[" + std::to_string(i) + "]", false));
      }
    } else if (key == "tests") {
      if (!value.is_array()) throw TaskError("tests", std::string("must be an array, got ") + json_type_name(value));
      for (std::size_t i = 0; i < value.size(); ++i) {
        task.tests.push_back(test_from_json(value[i], "tests[" + std::to_string(i) + "]"));
      }
    } else if (key == "grader") {
      task.grader = require_string(value, "grader", false);
      check_identifier(task.grader, "grader");
    } else if (key == "metadata") {
      if (!value.is_object()) throw TaskError("metadata", std::string("must be an object, got ") + json_type_name(value));
      task.metadata = value;
    } else {
      throw TaskError(key.empty() ? "\"\"" : key, "unknown field (expected id, domain, prompt, answer, choices, tests, grader, metadata)");
    }
  }
  if (!has_id) throw TaskError("id", "missing");
  if (!has_domain) throw TaskError("domain", "missing");
  if (!has_prompt) throw TaskError("prompt", "missing");

  // Domain-specific requirements only for the built-in domains; a user domain's grader decides.
  const bool default_grader = task.grader.empty() || task.grader == task.domain;
  if (task.domain == "code" && default_grader) {
    if (task.tests.empty()) throw TaskError("tests", "a code task needs at least one test");
    bool functional = false;
    for (const auto& t : task.tests) functional |= t.type == TestType::functional;
    if (functional) {
      auto it = task.metadata.find("func_name");
      if (it == task.metadata.end()) throw TaskError("metadata.func_name", "missing (functional tests call it)");
      if (!it->is_string() || it->get<std::string>().empty())
        throw TaskError("metadata.func_name", "must be a non-empty string");
    }
  }
  if ((task.domain == "math" || task.domain == "science") && default_grader) {
    if (!task.answer || task.answer->empty()) throw TaskError("answer", "a " + task.domain + " task needs a reference answer");
  }
  if (!task.choices.empty()) {
    if (!task.answer) throw TaskError("answer", "a multiple-choice task needs the correct label");
  }
  return task;
}

nlohmann::json to_json(const Task& t) {
  nlohmann::json j = {{"id", t.id}, {"domain", t.domain}, {"prompt", t.prompt}};
  if (t.answer) j["answer"] = *t.answer;
  if (!t.choices.empty()) j["choices"] = t.choices;
  if (!t.tests.empty()) {
    nlohmann::json tests = nlohmann::json::array();
    for (const auto& test : t.tests) {
      tests.push_back({{"input", test.input},
                       {"output", test.output},
                       {"type", test.type == TestType::functional ? "functional" : "stdin"}});
    }
    j["tests"] = std::move(tests);
  }
  if (!t.grader.empty()) j["grader"] = t.grader;
  if (!t.metadata.empty()) j["metadata"] = t.metadata;
  return j;
}

std::string LoadError::to_string() const {
  return path + ":" + std::to_string(line) + ": " + field + ": " + message;
}

LoadResult load_jsonl(const std::string& path, const LoadOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open task file");
  LoadResult result;
  std::unordered_map<std::string, std::size_t> line_of_id;
  std::string line;
  std::size_t line_number = 0;
  auto fail = [&](std::string field, std::string message) {
    LoadError error{path, line_number, std::move(field), std::move(message)};
    if (!options.skip_bad_lines) throw std::runtime_error(error.to_string());
    result.errors.push_back(std::move(error));
  };
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.size() > kMaxLineBytes) {
      fail("line", "longer than " + std::to_string(kMaxLineBytes) + " bytes");
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("json", std::string("not valid JSON (") + e.what() + ")");
      continue;
    }
    try {
      Task task = task_from_json(j);
      auto [it, inserted] = line_of_id.emplace(task.id, line_number);
      if (!inserted) {
        fail("id", "duplicate id \"" + task.id + "\" (first on line " + std::to_string(it->second) + ")");
        continue;
      }
      result.tasks.push_back(std::move(task));
    } catch (const TaskError& e) {
      std::string what = e.what();
      fail(e.field(), what.substr(std::min(what.size(), e.field().size() + 2)));
    }
  }
  if (in.bad()) throw std::runtime_error(path + ": read error");
  return result;
}

}  // namespace distil::tasks
