// What CPU this is, for benchmark tables and for keys of per-machine caches: a ratio measured on
// one CPU does not transfer to another (the same binary picks other kernels by ISA, and the
// same ISA runs at other speeds on other cores), so every table prints this. The one reader of
// /proc/cpuinfo in the project.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace distil::common {

struct CpuInfo {
  std::string model = "unknown";  // "model name" ("AMD EPYC", "Intel(R) Xeon(R) ...")
  std::string vendor;             // "AuthenticAMD", "GenuineIntel", "" when not given
  std::string family, model_number,
      stepping;  // decimal, as /proc/cpuinfo writes them ("" when not given)
  // The ISA extensions that select kernels (BLAS, oneDNN, ATen's vector loops), in a fixed order,
  // those present only: sse4_2 avx fma avx2 avx_vnni avx512f ... amx_tile amx_bf16 amx_int8 on x86;
  // asimd sve sve2 bf16 i8mm sme on Arm.
  std::vector<std::string> isa;
  int logical_cpus = 0;  // "processor" entries
};

// Parses /proc/cpuinfo text (the first processor's fields; the flags line or Arm's Features).
CpuInfo parse_cpuinfo(std::string_view text);
// This machine's, read once.
const CpuInfo& this_cpu();

// "avx2 fma avx512f avx512_bf16" (the isa list joined), "none" when empty.
std::string isa_flags(const CpuInfo& cpu);
// One line for a benchmark table's head:
// "cpu: AMD EPYC (AuthenticAMD family 26 model 2 stepping 1), 2 logical CPUs; isa: sse4_2 avx ..."
std::string cpu_description(const CpuInfo& cpu);
inline std::string cpu_description() { return cpu_description(this_cpu()); }

}  // namespace distil::common
