#include "env_server/feedback_request.h"

#include <stdexcept>

namespace distil::env {
namespace {

using nlohmann::json;

std::string join_field(const std::string& prefix, const std::string& field) {
  if (prefix.empty()) return field;
  if (field.empty()) return prefix;
  return prefix + "." + field;
}

std::string type_name(const json& j) { return j.type_name(); }

[[noreturn]] void invalid(const std::string& field, const std::string& problem, int status = 422,
                          const std::string& code = "invalid_field") {
  throw ApiError(status, code, field, (field.empty() ? std::string("request") : field) + ": " + problem);
}

}  // namespace

GradeJob validate_feedback_item(const json& item, const std::string& field_prefix, const TaskStore& tasks,
                                const graders::Registry& registry, const graders::GradeOptions& defaults) {
  if (!item.is_object()) invalid(field_prefix, "expected a JSON object, got " + type_name(item));
  for (const auto& [key, value] : item.items()) {
    (void)value;
    if (key != "task_id" && key != "task" && key != "response" && key != "options")
      invalid(join_field(field_prefix, key),
              "unknown field (expected task_id or task, response, options)", 422, "unknown_field");
  }

  GradeJob job;
  const bool has_id = item.contains("task_id");
  const bool has_inline = item.contains("task");
  if (has_id == has_inline)
    invalid(join_field(field_prefix, "task_id"), has_id ? "give either task_id or task, not both"
                                                        : "missing: give task_id or an inline task");
  if (has_id) {
    const auto& id = item.at("task_id");
    if (!id.is_string()) invalid(join_field(field_prefix, "task_id"), "expected a string, got " + type_name(id));
    job.task = tasks.find(id.get_ref<const std::string&>());
    if (!job.task)
      throw ApiError(404, "unknown_task", join_field(field_prefix, "task_id"),
                     join_field(field_prefix, "task_id") + ": no task with id '" +
                         id.get_ref<const std::string&>() + "' is loaded");
  } else {
    const auto& record = item.at("task");
    if (!record.is_object()) invalid(join_field(field_prefix, "task"), "expected an object, got " + type_name(record));
    try {
      job.task = std::make_shared<const tasks::Task>(tasks::task_from_json(record));
    } catch (const tasks::TaskError& e) {
      const std::string field = join_field(field_prefix, "task." + e.field());
      throw ApiError(422, "invalid_task", field, join_field(field_prefix, "task") + "." + e.what());
    } catch (const std::exception& e) {
      invalid(join_field(field_prefix, "task"), e.what(), 422, "invalid_task");
    }
  }

  if (!item.contains("response")) invalid(join_field(field_prefix, "response"), "missing (the text to grade)");
  const auto& response = item.at("response");
  if (!response.is_string())
    invalid(join_field(field_prefix, "response"), "expected a string, got " + type_name(response));
  job.response = response.get<std::string>();

  job.options = defaults;
  if (item.contains("options")) {
    const auto& options = item.at("options");
    if (!options.is_object())
      invalid(join_field(field_prefix, "options"), "expected an object, got " + type_name(options));
    try {
      job.options = graders::options_from_json(options, defaults);
    } catch (const std::exception& e) {
      // options_from_json says "options.<key>: <problem>"; keep its field name.
      const std::string message = e.what();
      const auto colon = message.find(':');
      const std::string field = colon == std::string::npos ? "options" : message.substr(0, colon);
      throw ApiError(422, "invalid_option", join_field(field_prefix, field), join_field(field_prefix, message));
    }
  }

  try {
    job.grader = &registry.for_task(*job.task);
  } catch (const tasks::TaskError& e) {
    const std::string field = join_field(field_prefix, (has_id ? "task_id" : "task." + e.field()));
    throw ApiError(422, "unknown_grader", field, field + ": " + e.what());
  } catch (const std::exception& e) {
    invalid(join_field(field_prefix, "task"), e.what(), 422, "unknown_grader");
  }
  return job;
}

std::vector<std::variant<GradeJob, ApiError>> validate_feedback_batch(const json& body, const RequestLimits& limits,
                                                                      const TaskStore& tasks,
                                                                      const graders::Registry& registry,
                                                                      const graders::GradeOptions& defaults) {
  if (!body.is_object()) invalid("", "expected a JSON object {\"items\": [...]}, got " + type_name(body));
  for (const auto& [key, value] : body.items()) {
    (void)value;
    if (key != "items") invalid(key, "unknown field (a batch body holds only \"items\")", 422, "unknown_field");
  }
  if (!body.contains("items")) invalid("items", "missing (an array of feedback items)");
  const auto& items = body.at("items");
  if (!items.is_array()) invalid("items", "expected an array, got " + type_name(items));
  if (items.size() > limits.max_batch_items)
    throw ApiError(422, "batch_too_large", "items",
                   "items: " + std::to_string(items.size()) + " items exceed max_batch_items = " +
                       std::to_string(limits.max_batch_items))
        .with("limit", limits.max_batch_items);

  std::vector<std::variant<GradeJob, ApiError>> out;
  out.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      out.emplace_back(validate_feedback_item(items[i], "items[" + std::to_string(i) + "]", tasks, registry, defaults));
    } catch (const ApiError& e) {
      out.emplace_back(e);
    }
  }
  return out;
}

}  // namespace distil::env
