#include "common/timestamp.h"

#include <cstdio>
#include <ctime>

namespace distil::common {

std::string format_timestamp(std::chrono::system_clock::time_point t, TimestampStyle style) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  const long long millis = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  const bool utc = style == TimestampStyle::iso8601_utc;
  std::tm tm{};
  if (utc) gmtime_r(&seconds, &tm);
  else localtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d%c%02d:%02d:%02d.%03lld%s", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, utc ? 'T' : ' ', tm.tm_hour, tm.tm_min, tm.tm_sec, millis, utc ? "Z" : "");
  return buf;
}

}  // namespace distil::common
