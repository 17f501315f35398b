// Validation of POST /v1/feedback and /v1/feedback:batch bodies into gradeable items.
// Everything here treats its input as hostile: any problem is an ApiError naming the field.
#pragma once

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "env_server/api_error.h"
#include "env_server/request_limits.h"
#include "env_server/task_store.h"
#include "graders/grader.h"

namespace distil::env {

struct GradeJob {
  std::shared_ptr<const tasks::Task> task;
  const graders::Grader* grader = nullptr;
  std::string response;
  graders::GradeOptions options;
};

// One item object. `field_prefix` ("" or "items[3]") is prepended to field names in errors.
GradeJob validate_feedback_item(const nlohmann::json& item, const std::string& field_prefix,
                                const TaskStore& tasks, const graders::Registry& registry,
                                const graders::GradeOptions& defaults);

// A batch body. Errors of the envelope (not an object, no "items", too many) throw; an error in
// one item becomes that item's ApiError and does not affect the others.
std::vector<std::variant<GradeJob, ApiError>> validate_feedback_batch(
    const nlohmann::json& body, const RequestLimits& limits, const TaskStore& tasks,
    const graders::Registry& registry, const graders::GradeOptions& defaults);

}  // namespace distil::env
