#include "sandbox/rlimits.h"

#include <cerrno>
#include <cmath>

namespace distil::sandbox::detail {

RlimitPlan plan_rlimits(const Limits& limits) {
  RlimitPlan plan;
  auto add = [&plan](int resource, rlim_t value, rlim_t hard_extra = 0) {
    plan.entries[plan.count++] = RlimitPlan::Entry{resource, value, hard_extra};
  };
  // RLIMIT_CPU has whole-second granularity; the exact CPU verdict comes from rusage.
  const double cpu = limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0;
  add(RLIMIT_CPU, static_cast<rlim_t>(std::ceil(cpu)), 1);
  add(RLIMIT_AS, static_cast<rlim_t>(limits.memory_mb) << 20);
  add(RLIMIT_FSIZE, static_cast<rlim_t>(limits.file_size_mb) << 20);
  add(RLIMIT_NOFILE, static_cast<rlim_t>(limits.max_open_files > 0 ? limits.max_open_files : 1));
  add(RLIMIT_NPROC, static_cast<rlim_t>(limits.max_processes > 0 ? limits.max_processes : 1));
  add(RLIMIT_CORE, 0);
  add(RLIMIT_MEMLOCK, 0);
  add(RLIMIT_MSGQUEUE, 0);
  return plan;
}

void add_stack_limit(RlimitPlan& plan) {
  plan.entries[plan.count++] = RlimitPlan::Entry{RLIMIT_STACK, kThreadStackBytes, kMainStackBytes - kThreadStackBytes};
}

int apply_rlimits(const RlimitPlan& plan, int* failed) noexcept {
  for (int i = 0; i < plan.count; ++i) {
    const rlimit value{plan.entries[i].value, plan.entries[i].value + plan.entries[i].hard_extra};
    if (setrlimit(plan.entries[i].resource, &value) != 0) {
      if (failed) *failed = i;
      return errno;
    }
  }
  return 0;
}

std::string validate_limits(const Limits& l) {
  auto out_of_range = [](const char* field, double value, double lo, double hi) {
    return std::string("limits.") + field + ": " + std::to_string(value) + " is outside [" + std::to_string(lo) +
           ", " + std::to_string(hi) + "]";
  };
  if (!(l.cpu_time_s > 0 && l.cpu_time_s <= 3600)) return out_of_range("cpu_time_s", l.cpu_time_s, 0.001, 3600);
  if (!(l.wall_time_s >= 0 && l.wall_time_s <= 7200)) return out_of_range("wall_time_s", l.wall_time_s, 0, 7200);
  if (l.memory_mb < 16 || l.memory_mb > (1u << 20))
    return out_of_range("memory_mb", static_cast<double>(l.memory_mb), 16, 1 << 20);
  if (l.output_bytes < 1 || l.output_bytes > (1u << 30))
    return out_of_range("output_bytes", static_cast<double>(l.output_bytes), 1, 1 << 30);
  if (l.stderr_bytes > (1u << 30))
    return out_of_range("stderr_bytes", static_cast<double>(l.stderr_bytes), 0, 1 << 30);
  if (l.file_size_mb < 1 || l.file_size_mb > (1u << 16))
    return out_of_range("file_size_mb", static_cast<double>(l.file_size_mb), 1, 1 << 16);
  if (l.max_processes < 1 || l.max_processes > 4096) return out_of_range("max_processes", l.max_processes, 1, 4096);
  if (l.max_open_files < 8 || l.max_open_files > 65536)
    return out_of_range("max_open_files", l.max_open_files, 8, 65536);
  if (!(l.compile_cpu_time_s > 0 && l.compile_cpu_time_s <= 3600))
    return out_of_range("compile_cpu_time_s", l.compile_cpu_time_s, 0.001, 3600);
  return {};
}

double wall_deadline_s(const Limits& limits) {
  if (limits.wall_time_s > 0) return limits.wall_time_s;
  const double cpu = limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0;
  return 2.0 * cpu + 1.0;
}

}  // namespace distil::sandbox::detail
