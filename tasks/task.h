// The task record (DESIGN.md "Task record"), its validation and the JSONL loader.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::tasks {

enum class TestType { stdin_io, functional };

struct TestCase {
  std::string input;
  std::string output;
  TestType type = TestType::stdin_io;
};

struct Task {
  std::string id;
  std::string domain;                 // "code", "math", "science", or a user domain
  std::string prompt;
  std::optional<std::string> answer;  // math / science reference answer
  std::vector<std::string> choices;   // science multiple choice, labelled A, B, C, ... in order
  std::vector<TestCase> tests;        // code
  std::string grader;                 // explicit grader name; empty: the domain picks one
  nlohmann::json metadata = nlohmann::json::object();  // func_name, starter_code, ...
};

// A record that fails validation. `field` is the JSON path of the offending field ("tests[2].input").
class TaskError : public std::runtime_error {
 public:
  TaskError(std::string field, const std::string& message)
      : std::runtime_error(field + ": " + message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

// Validates and converts; throws TaskError naming the field.
Task task_from_json(const nlohmann::json& j);
nlohmann::json to_json(const Task& t);

struct LoadOptions {
  bool skip_bad_lines = false;  // false: the first bad line throws; true: it is reported and skipped
};

struct LoadError {
  std::string path;
  std::size_t line = 0;  // 1-based
  std::string field;
  std::string message;
  std::string to_string() const;  // "path:line: field: message"
};

struct LoadResult {
  std::vector<Task> tasks;
  std::vector<LoadError> errors;
};

// Reads one task per line (blank lines ignored). Throws std::runtime_error with
// "path:line: field: message" on the first bad line unless skip_bad_lines.
LoadResult load_jsonl(const std::string& path, const LoadOptions& options = {});

}  // namespace distil::tasks
