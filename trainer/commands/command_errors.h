// How every distil-train / distil-eval subcommand ends on an error.
#pragma once

#include <exception>
#include <iostream>

#include "trainer/config.h"

namespace distil::trainer {

// Runs a subcommand's body and returns its exit code. A bad configuration value exits 2 with the
// key named, any other error exits 1; both are printed as "<command>: ..." on stderr.
template <class Body>
int exit_code_of(const char* command, Body&& body) {
  try {
    return body();
  } catch (const ConfigError& e) {
    std::cerr << command << ": config error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << command << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace distil::trainer
