#include "trainer/reproducible.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace distil::trainer {
namespace {

constexpr const char* kMarker = "DISTIL_REPRODUCIBLE";

// AVX2 with FMA covers every x86-64 server CPU since 2013-2015 (Intel Haswell, AMD Zen); machines
// without it get the baseline kernels, reproducible among themselves.
bool has_avx2_fma() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

std::map<std::string, std::string> pinned_kernel_environment() {
  const bool avx2 = has_avx2_fma();
  return {{"ATEN_CPU_CAPABILITY", avx2 ? "avx2" : "default"},
          {"OPENBLAS_CORETYPE", avx2 ? "Haswell" : "Prescott"},
          // OpenBLAS sizes some blocking from the L2 size (cpuid, or this variable when set);
          // a fixed value keeps the summation order independent of the cache.
          {"OPENBLAS_L2_SIZE", "512"},
          {"DISTIL_BLAS_LINEAR", "1"},
          {"OMP_NUM_THREADS", "1"},
          {"OPENBLAS_NUM_THREADS", "1"},
          {"MKL_NUM_THREADS", "1"},
          {kMarker, avx2 ? "pinned:avx2-haswell" : "pinned:baseline-prescott"}};
}

std::string kernel_pinning() {
  const char* marker = std::getenv(kMarker);
  if (marker && std::strncmp(marker, "pinned:", 7) == 0) return marker;
  return "unpinned";
}

void pin_kernels_if_requested(int argc, char** argv, bool always) {
  (void)argc;
  const char* marker = std::getenv(kMarker);
  if (marker && std::strncmp(marker, "pinned:", 7) == 0) return;  // already in force
  const bool requested = always || (marker && std::strcmp(marker, "1") == 0);
  if (!requested) return;
  for (const auto& [name, value] : pinned_kernel_environment()) {
    if (setenv(name.c_str(), value.c_str(), 1) != 0) {
      std::fprintf(stderr, "warning: cannot set %s (%s); kernels are not pinned\n", name.c_str(), std::strerror(errno));
      return;
    }
  }
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: re-executing with pinned kernels failed (%s); this run is not bitwise reproducible\n",
               std::strerror(errno));
  unsetenv(kMarker);
}

}  // namespace distil::trainer
