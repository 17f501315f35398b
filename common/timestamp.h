// Wall-clock timestamps with milliseconds: the one formatter of the project.
#pragma once

#include <chrono>
#include <string>

namespace distil::common {

enum class TimestampStyle {
  iso8601_utc,  // "2026-11-23T04:10:00.123Z": the env server's access log
  log_local,    // "2026-11-23 05:10:00.123" in local time: spdlog's layout, the trainer's stderr lines
};

std::string format_timestamp(std::chrono::system_clock::time_point t, TimestampStyle style);
inline std::string timestamp_now(TimestampStyle style) {
  return format_timestamp(std::chrono::system_clock::now(), style);
}

}  // namespace distil::common
