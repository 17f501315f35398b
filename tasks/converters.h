// Converters from public benchmark formats to the task record: LiveCodeBench, MATH-500 / AIME /
// AMC / HMMT / Minerva style math JSONL, and SciKnowEval (L3) science records.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tasks/task.h"

namespace distil::tasks {

enum class SourceFormat { livecodebench, math, sciknoweval };

// "lcb"/"livecodebench", "math"/"math500"/"aime"/"amc"/"hmmt"/"minerva", "sciknoweval".
// Throws std::invalid_argument naming the accepted names.
SourceFormat source_format_from_string(const std::string& name);

struct ConvertOptions {
  std::string id_prefix;          // default: the format's name ("lcb", "math", "sciknoweval")
  bool add_instructions = true;   // append the answer-format instruction to each prompt
  bool skip_bad_lines = false;
};

// One source record -> one task. `index` (0-based) names records that carry no id. Throws
// TaskError naming the source field.
Task convert_record(const nlohmann::json& record, SourceFormat format, std::size_t index, const ConvertOptions& options = {});

// Reads a source JSONL file (or a JSON array file) and converts every record. Errors carry the
// line; with skip_bad_lines they are collected instead of thrown.
LoadResult convert_file(const std::string& path, SourceFormat format, const ConvertOptions& options = {});

// LiveCodeBench private tests: base64 -> zlib -> pickle (a str) -> the JSON text inside.
// Throws std::runtime_error on malformed or oversized input.
std::string decode_lcb_compressed(const std::string& encoded);

}  // namespace distil::tasks
