#include "sandbox/rlimits.h"

#include <cerrno>
#include <cmath>

namespace distil::sandbox::detail {

RlimitPlan plan_rlimits(const Limits& limits) {
  RlimitPlan plan;
  auto add = [&plan](int resource, rlim_t value) {
    plan.entries[plan.count++] = RlimitPlan::Entry{resource, value};
  };
  // RLIMIT_CPU has whole-second granularity; the exact CPU verdict comes from rusage.
  const double cpu = limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0;
  add(RLIMIT_CPU, static_cast<rlim_t>(std::ceil(cpu)));
  add(RLIMIT_AS, static_cast<rlim_t>(limits.memory_mb) << 20);
  add(RLIMIT_FSIZE, static_cast<rlim_t>(limits.file_size_mb) << 20);
  add(RLIMIT_NOFILE, static_cast<rlim_t>(limits.max_open_files > 0 ? limits.max_open_files : 1));
  add(RLIMIT_NPROC, static_cast<rlim_t>(limits.max_processes > 0 ? limits.max_processes : 1));
  add(RLIMIT_CORE, 0);
  add(RLIMIT_MEMLOCK, 0);
  add(RLIMIT_MSGQUEUE, 0);
  return plan;
}

int apply_rlimits(const RlimitPlan& plan, int* failed) noexcept {
  for (int i = 0; i < plan.count; ++i) {
    const rlimit value{plan.entries[i].value, plan.entries[i].value};
    if (setrlimit(plan.entries[i].resource, &value) != 0) {
      if (failed) *failed = i;
      return errno;
    }
  }
  return 0;
}

double wall_deadline_s(const Limits& limits) {
  if (limits.wall_time_s > 0) return limits.wall_time_s;
  const double cpu = limits.cpu_time_s > 0 ? limits.cpu_time_s : 1.0;
  return 2.0 * cpu + 1.0;
}

}  // namespace distil::sandbox::detail
