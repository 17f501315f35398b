// Limits on what a request may contain; every one is reported by GET /v1/limits.
#pragma once

#include <cstddef>

#include <nlohmann/json.hpp>

namespace distil::env {

struct RequestLimits {
  std::size_t max_body_bytes = 8 << 20;     // 413 above this
  std::size_t max_header_bytes = 16 << 10;  // 431 above this
  std::size_t max_json_depth = 32;          // nesting of objects/arrays
  std::size_t max_string_bytes = 1 << 20;   // any JSON string or key, e.g. a response
  std::size_t max_batch_items = 256;        // POST /v1/feedback:batch, 422 above this
};

inline nlohmann::json to_json(const RequestLimits& l) {
  return {{"max_body_bytes", l.max_body_bytes},
          {"max_header_bytes", l.max_header_bytes},
          {"max_json_depth", l.max_json_depth},
          {"max_string_bytes", l.max_string_bytes},
          {"max_batch_items", l.max_batch_items}};
}

}  // namespace distil::env
