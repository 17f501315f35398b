// The API's error shape: {"error": {"code", "message", "field"?}} with an HTTP status.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace distil::env {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, std::string field, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)), field_(std::move(field)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& field() const { return field_; }
  nlohmann::json to_json() const;  // the whole {"error": {...}} document
  // Extra machine-readable members of the error object, e.g. {"limit": 256}.
  ApiError& with(const std::string& key, nlohmann::json value) {
    extra_[key] = std::move(value);
    return *this;
  }

 private:
  int status_;
  std::string code_;
  std::string field_;
  nlohmann::json extra_ = nlohmann::json::object();
};

inline nlohmann::json ApiError::to_json() const {
  nlohmann::json error = {{"code", code_}, {"message", what()}};
  if (!field_.empty()) error["field"] = field_;
  for (const auto& [key, value] : extra_.items()) error[key] = value;
  return {{"error", std::move(error)}};
}

// Serialises JSON for the wire. Program output inside feedback can hold any bytes, so invalid
// UTF-8 is replaced (U+FFFD) instead of throwing.
inline std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace distil::env
