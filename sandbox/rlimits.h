// Resource limits for a sandboxed process: computed in the supervisor, applied in the child
// between clone and exec (async-signal-safe, no allocation).
#pragma once

#include <sys/resource.h>

#include <string>

#include "sandbox/sandbox.h"

namespace distil::sandbox::detail {

struct RlimitPlan {
  struct Entry {
    int resource;
    rlim_t value;  // soft and hard
    rlim_t hard_extra = 0;  // hard = value + hard_extra
  };
  Entry entries[8];
  int count = 0;
};

// CPU seconds (soft: the limit rounded up, which sends SIGXCPU; hard one second later, SIGKILL
// for a program that catches SIGXCPU), address space, file size, open files, processes, core
// dumps, locked memory and message queues off.
RlimitPlan plan_rlimits(const Limits& limits);

// Applies every entry; returns 0 or the errno of the first failure, with its index in `failed`.
int apply_rlimits(const RlimitPlan& plan, int* failed) noexcept;

// Empty when every field is in range, else "limits.<field>: <problem>". Limits may come from
// task files and requests, so nothing is assumed about them.
std::string validate_limits(const Limits& limits);

// Wall-clock deadline in seconds for `limits`.
double wall_deadline_s(const Limits& limits);

}  // namespace distil::sandbox::detail
