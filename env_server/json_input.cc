#include "env_server/json_input.h"

#include <string>

#include "env_server/api_error.h"

namespace distil::env {
namespace {

using nlohmann::json;

std::string child_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// Depth is already bounded by the parser callback, so this recursion is bounded too.
void check_strings(const json& j, const std::string& path, const RequestLimits& limits) {
  switch (j.type()) {
    case json::value_t::string:
      if (j.get_ref<const std::string&>().size() > limits.max_string_bytes)
        throw ApiError(422, "string_too_long", path.empty() ? "$" : path,
                       (path.empty() ? std::string("$") : path) + ": string of " +
                           std::to_string(j.get_ref<const std::string&>().size()) +
                           " bytes exceeds max_string_bytes = " + std::to_string(limits.max_string_bytes));
      break;
    case json::value_t::object:
      for (const auto& [key, value] : j.items()) {
        if (key.size() > limits.max_string_bytes)
          throw ApiError(422, "string_too_long", path.empty() ? "$" : path,
                         "an object key longer than max_string_bytes = " +
                             std::to_string(limits.max_string_bytes));
        check_strings(value, child_path(path, key), limits);
      }
      break;
    case json::value_t::array: {
      std::size_t index = 0;
      for (const auto& value : j) {
        check_strings(value, path + "[" + std::to_string(index) + "]", limits);
        ++index;
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace

json parse_json_body(std::string_view body, const RequestLimits& limits) {
  if (body.empty()) throw ApiError(400, "malformed_json", "", "request body is empty; expected a JSON object");
  const auto max_depth = static_cast<int>(limits.max_json_depth);
  json::parser_callback_t depth_guard = [max_depth](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw ApiError(422, "too_deep", "", "JSON nesting deeper than max_json_depth = " + std::to_string(max_depth));
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(body.begin(), body.end(), depth_guard, /*allow_exceptions=*/true,
                         /*ignore_comments=*/false);
  } catch (const json::parse_error& e) {
    const std::string what = e.what();
    if (what.find("UTF-8") != std::string::npos)
      throw ApiError(400, "invalid_utf8", "", "request body is not valid UTF-8 at byte " + std::to_string(e.byte));
    throw ApiError(400, "malformed_json", "", "request body is not valid JSON: " + what);
  } catch (const json::out_of_range& e) {
    // A number too large for a double ("1e999999"): found by the fuzzer, thrown during parsing.
    throw ApiError(400, "malformed_json", "", std::string("request body holds a number out of range: ") + e.what());
  }
  check_strings(parsed, "", limits);
  return parsed;
}

}  // namespace distil::env
