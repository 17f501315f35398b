// One sandbox per grader test program, made on first use; where the host cannot make one, the
// tests that need it are skipped with the reason (never passed silently).
#pragma once

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "sandbox/sandbox.h"

namespace distil::test {

inline sandbox::Sandbox* shared_sandbox(std::string* why) {
  static std::unique_ptr<sandbox::Sandbox> box;
  static std::string error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    try {
      box = std::make_unique<sandbox::Sandbox>();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (why) *why = error;
  return box.get();
}

}  // namespace distil::test

#define REQUIRE_SANDBOX()                                                   \
  std::string why_no_sandbox;                                               \
  if (!distil::test::shared_sandbox(&why_no_sandbox)) GTEST_SKIP() << "no sandbox on this host: " << why_no_sandbox
