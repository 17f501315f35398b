#include "common/cpu_info.h"

#include <fstream>
#include <set>
#include <sstream>

namespace distil::common {
namespace {

// Kernel-selecting extensions, in the order they are printed.
constexpr const char* kIsaOfInterest[] = {
    "sse4_2",   "avx",      "fma",         "avx2",        "avx_vnni",    "avx512f",  "avx512dq",
    "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
    "amx_int8", "asimd",    "sve",         "sve2",        "bf16",        "i8mm",     "sme"};

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  const auto end = s.find_last_not_of(" \t\r");
  return std::string(s.substr(begin, end - begin + 1));
}

}  // namespace

CpuInfo parse_cpuinfo(std::string_view text) {
  CpuInfo cpu;
  std::set<std::string> flags;
  bool have_flags = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    const std::string value = trim(line.substr(colon + 1));
    if (key == "processor") {
      ++cpu.logical_cpus;
    } else if (cpu.logical_cpus <= 1) {  // the first processor's fields
      if (key == "model name" && cpu.model == "unknown" && !value.empty())
        cpu.model = value;
      else if (key == "vendor_id" && cpu.vendor.empty())
        cpu.vendor = value;
      else if (key == "cpu family" && cpu.family.empty())
        cpu.family = value;
      else if (key == "model" && cpu.model_number.empty())
        cpu.model_number = value;
      else if (key == "stepping" && cpu.stepping.empty())
        cpu.stepping = value;
      else if ((key == "flags" || key == "Features") && !have_flags) {
        have_flags = true;
        std::istringstream words(value);
        for (std::string w; words >> w;) flags.insert(w);
      }
    }
  }
  for (const char* f : kIsaOfInterest)
    if (flags.count(f)) cpu.isa.emplace_back(f);
  return cpu;
}

const CpuInfo& this_cpu() {
  static const CpuInfo cpu = [] {
    std::ifstream in("/proc/cpuinfo");
    std::stringstream text;
    text << in.rdbuf();
    return parse_cpuinfo(text.str());
  }();
  return cpu;
}

std::string isa_flags(const CpuInfo& cpu) {
  if (cpu.isa.empty()) return "none";
  std::string out;
  for (const auto& f : cpu.isa) out += (out.empty() ? "" : " ") + f;
  return out;
}

std::string cpu_description(const CpuInfo& cpu) {
  std::string out = "cpu: " + cpu.model;
  std::string ident = cpu.vendor;
  if (!cpu.family.empty())
    ident += (ident.empty() ? "" : " ") + std::string("family ") + cpu.family;
  if (!cpu.model_number.empty()) ident += " model " + cpu.model_number;
  if (!cpu.stepping.empty()) ident += " stepping " + cpu.stepping;
  if (!ident.empty()) out += " (" + ident + ")";
  if (cpu.logical_cpus > 0) out += ", " + std::to_string(cpu.logical_cpus) + " logical CPUs";
  return out + "; isa: " + isa_flags(cpu);
}

}  // namespace distil::common
