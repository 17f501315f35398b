// `distil-env grade`: one grading from the shell, printing the same object the server returns.
#include "graders/cli.h"

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "graders/grader.h"
#include "tasks/converters.h"

namespace distil::graders {
namespace {

std::string read_file_or_stdin(const std::string& path) {
  if (path == "-") {
    std::ostringstream out;
    out << std::cin.rdbuf();
    return out.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

tasks::Task load_task(const std::string& path, const std::string& task_id) {
  if (!task_id.empty()) {
    auto loaded = tasks::load_jsonl(path);
    for (auto& t : loaded.tasks) {
      if (t.id == task_id) return std::move(t);
    }
    throw std::runtime_error(path + ": no task with id \"" + task_id + "\"");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_or_stdin(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(path + ": not valid JSON (" + e.what() + "); for a JSONL file pass --task-id");
  }
  try {
    return tasks::task_from_json(j);
  } catch (const tasks::TaskError& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

}  // namespace

void add_grade_command(CLI::App& app, int& exit_code) {
  struct Args {
    std::string task_file, task_id, response_file, options_json;
    bool pretty = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("grade", "Grade one response against one task and print the result JSON");
  cmd->add_option("--task-file", args->task_file, "Task record: a JSON object, or a JSONL file with --task-id")->required();
  cmd->add_option("--task-id", args->task_id, "Pick this task from a JSONL --task-file");
  cmd->add_option("--response-file", args->response_file, "The model response text ('-' reads stdin)")->required();
  cmd->add_option("--options", args->options_json, "Grading options as a JSON object (the API's \"options\")");
  cmd->add_flag("--pretty", args->pretty, "Indent the JSON output");
  cmd->callback([args, &exit_code] {
    try {
      const tasks::Task task = load_task(args->task_file, args->task_id);
      const std::string response = read_file_or_stdin(args->response_file);
      GradeOptions options;
      if (!args->options_json.empty()) {
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(args->options_json);
        } catch (const nlohmann::json::parse_error& e) {
          throw std::runtime_error(std::string("--options: not valid JSON (") + e.what() + ")");
        }
        options = options_from_json(j);
      }
      const Registry& registry = Registry::builtin();
      const Grader& grader = registry.for_task(task);
      std::unique_ptr<sandbox::Sandbox> box;
      if (grader.needs_sandbox()) box = std::make_unique<sandbox::Sandbox>();
      GradeContext context{box.get()};
      const GradeResult result = grade(registry, task, response, options, context);
      std::cout << to_json(result).dump(args->pretty ? 2 : -1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
      exit_code = 0;
    } catch (const std::exception& e) {
      std::cerr << "distil-env grade: " << e.what() << "\n";
      exit_code = 2;
    }
  });
}

void add_convert_command(CLI::App& app, int& exit_code) {
  struct Args {
    std::string format, input, output, id_prefix;
    bool skip_bad_lines = false, no_instructions = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a public benchmark file (LiveCodeBench, MATH/AIME/AMC/HMMT/Minerva, "
                                                "SciKnowEval) into task JSONL");
  cmd->add_option("--format", args->format, "lcb, math, math500, aime, amc, hmmt, minerva or sciknoweval")->required();
  cmd->add_option("input", args->input, "source JSONL (or JSON array) file")->required();
  cmd->add_option("output", args->output, "task JSONL to write ('-' for stdout)")->required();
  cmd->add_option("--id-prefix", args->id_prefix, "prefix of the task ids (default: the format)");
  cmd->add_flag("--skip-bad-lines", args->skip_bad_lines, "report bad records on stderr and convert the rest");
  cmd->add_flag("--no-instructions", args->no_instructions, "do not append the answer-format instruction to prompts");
  cmd->callback([args, &exit_code] {
    try {
      tasks::ConvertOptions options;
      options.id_prefix = args->id_prefix;
      options.skip_bad_lines = args->skip_bad_lines;
      options.add_instructions = !args->no_instructions;
      const auto result = tasks::convert_file(args->input, tasks::source_format_from_string(args->format), options);
      std::ofstream file;
      std::ostream* out = &std::cout;
      if (args->output != "-") {
        file.open(args->output, std::ios::binary | std::ios::trunc);
        if (!file) throw std::runtime_error(args->output + ": cannot write");
        out = &file;
      }
      for (const auto& task : result.tasks) *out << tasks::to_json(task).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      out->flush();
      if (!*out) throw std::runtime_error(args->output + ": write failed");
      for (const auto& error : result.errors) std::cerr << "skipped " << error.to_string() << "\n";
      std::cerr << "converted " << result.tasks.size() << " records, skipped " << result.errors.size() << "\n";
      exit_code = result.errors.empty() ? 0 : 1;
    } catch (const std::exception& e) {
      std::cerr << "distil-env convert: " << e.what() << "\n";
      exit_code = 2;
    }
  });
}

}  // namespace distil::graders
