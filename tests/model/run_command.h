// Runs a shell command for a test and returns everything it wrote to standard output.
#pragma once

#include <cstdio>
#include <string>

namespace distil::test {

// `status` (optional) receives pclose's wait status, or -1 when the command could not be started.
inline std::string run_command(const std::string& command, int* status = nullptr) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) {
    if (status) *status = -1;
    return out;
  }
  char buffer[65536];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int rc = pclose(pipe);
  if (status) *status = rc;
  return out;
}

}  // namespace distil::test
