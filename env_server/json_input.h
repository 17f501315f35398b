// Parsing a hostile JSON request body under the depth and string-length limits.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "env_server/request_limits.h"

namespace distil::env {

// Throws ApiError: 400 malformed_json / invalid_utf8, 422 too_deep, 422 string_too_long (naming
// the field by its JSON path, e.g. "items[3].response").
nlohmann::json parse_json_body(std::string_view body, const RequestLimits& limits);

}  // namespace distil::env
