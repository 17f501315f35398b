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
  Entry entries[10];
  int count = 0;
};

// CPU seconds (soft: the limit rounded up, which sends SIGXCPU; hard one second later, SIGKILL
// for a program that catches SIGXCPU), address space, file size, open files, processes, core
// dumps, locked memory and message queues off.
RlimitPlan plan_rlimits(const Limits& limits);

// The stack of a user program (and of the fork server, whose children inherit it): soft 2 MiB
// at exec, which is what glibc takes for the default size of every thread's stack (each one
// counts against RLIMIT_AS in full: 8 MiB stacks let only a few threads start under 256 MiB);
// hard 64 MiB, to which the sandbox's preloaded helper raises the soft limit before main, so
// the main thread may recurse deeply (the code grader's recursion limit is 50000).
inline constexpr rlim_t kThreadStackBytes = 2u << 20;
inline constexpr rlim_t kMainStackBytes = 64u << 20;
void add_stack_limit(RlimitPlan& plan);

// Applies every entry; returns 0 or the errno of the first failure, with its index in `failed`.
int apply_rlimits(const RlimitPlan& plan, int* failed) noexcept;

// Empty when every field is in range, else "limits.<field>: <problem>". Limits may come from
// task files and requests, so nothing is assumed about them.
std::string validate_limits(const Limits& limits);

// Wall-clock deadline in seconds for `limits`.
double wall_deadline_s(const Limits& limits);

}  // namespace distil::sandbox::detail
