#include "trainer/model/linear_kernel.h"

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <climits>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "common/timestamp.h"

namespace distil::model {
namespace {

namespace fs = std::filesystem;

// Bumped when the calibration set or method changes, so old measurements are not reused.
constexpr int kCalibrationVersion = 2;
constexpr const char* kFormat = "distil-cpu-kernels";
constexpr std::uintmax_t kMaxCacheBytes = std::uintmax_t{1} << 20;
constexpr size_t kMaxEntries = 64;   // machines (keys) per file
constexpr size_t kMaxShapes = 2000;  // shapes per machine

bool usable_seconds(const nlohmann::json& j) {
  return j.is_number() && std::isfinite(j.get<double>()) && j.get<double>() >= 0;
}

std::atomic<bool> memory_kept{false};  // keep_freed_cpu_memory() in force

}  // namespace

bool keep_freed_cpu_memory(bool honour_environment) {
  if (honour_environment) {
    const char* setting = std::getenv("DISTIL_KEEP_FREED_MEMORY");
    if (setting && std::strcmp(setting, "0") == 0) return memory_kept.load();
  }
#if defined(__GLIBC__)
  // 32 MiB is glibc's largest mmap threshold on 64-bit; setting it also ends the dynamic threshold.
  if (mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1 &&
      mallopt(M_TOP_PAD, 64 << 20) == 1)
    memory_kept = true;
#endif
  return memory_kept.load();
}

bool freed_cpu_memory_kept() { return memory_kept.load(); }

const char* linear_kernel_name(LinearKernel kernel) {
  return kernel == LinearKernel::onednn ? "onednn" : "blas";
}

std::optional<LinearKernel> linear_kernel_from_name(std::string_view name) {
  if (name == "blas") return LinearKernel::blas;
  if (name == "onednn") return LinearKernel::onednn;
  return std::nullopt;
}

std::optional<ForcedKernel> forced_linear_kernel(const GetEnv& getenv, std::string* warning) {
  // Reproducible mode pins BLAS whatever else is asked: oneDNN's JIT kernels differ by ISA.
  if (const char* pinned = getenv("DISTIL_REPRODUCIBLE");
      pinned && std::strncmp(pinned, "pinned:", 7) == 0)
    return ForcedKernel{LinearKernel::blas, std::string("reproducible mode (") + pinned + ")"};
  if (const char* blas = getenv("DISTIL_BLAS_LINEAR"); blas && *blas && std::strcmp(blas, "0") != 0)
    return ForcedKernel{LinearKernel::blas, std::string("DISTIL_BLAS_LINEAR=") + blas};
  if (const char* name = getenv("DISTIL_LINEAR_KERNEL"); name && *name) {
    if (auto kernel = linear_kernel_from_name(name))
      return ForcedKernel{*kernel, std::string("DISTIL_LINEAR_KERNEL=") + name};
    if (std::strcmp(name, "auto") != 0 && warning)
      *warning =
          std::string("DISTIL_LINEAR_KERNEL=") + name + " is not blas, onednn or auto; measuring";
  }
  return std::nullopt;
}

std::string kernel_env_of(const GetEnv& getenv) {
  std::string out;
  for (const char* name :
       {"ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "ONEDNN_MAX_CPU_ISA",
        "DNNL_MAX_CPU_ISA", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"}) {
    const char* value = getenv(name);
    if (value && *value) out += (out.empty() ? "" : ",") + std::string(name) + "=" + value;
  }
  return out;
}

std::string kernel_cache_key(const KernelCacheKeyInputs& in) {
  std::ostringstream key;
  key << "v" << kCalibrationVersion << "|cpu=" << in.cpu.model << "|id=" << in.cpu.vendor << "/"
      << in.cpu.family << "/" << in.cpu.model_number << "/" << in.cpu.stepping
      << "|isa=" << common::isa_flags(in.cpu) << "|torch=" << in.torch_version
      << "|threads=" << in.threads << "|blas_threads=" << in.blas_threads
      << "|env=" << in.kernel_env << "|memory=" << (in.freed_memory_kept ? "kept" : "default");
  return key.str();
}

int64_t calibration_rows(int64_t rows) {
  int64_t r = 1;
  while (r < rows && r < 4096) r *= 2;
  return r;
}

std::string shape_name(int64_t rows, int64_t in, int64_t out) {
  return std::to_string(rows) + "x" + std::to_string(in) + "x" + std::to_string(out);
}

std::optional<fs::path> kernel_cache_path(const GetEnv& getenv) {
  if (const char* file = getenv("DISTIL_KERNEL_CACHE"); file && *file) {
    if (std::strcmp(file, "off") == 0) return std::nullopt;
    return fs::path(file);
  }
  if (const char* xdg = getenv("XDG_CACHE_HOME"); xdg && *xdg == '/')
    return fs::path(xdg) / "distil/cpu_kernels.json";
  if (const char* home = getenv("HOME"); home && *home == '/')
    return fs::path(home) / ".cache/distil/cpu_kernels.json";
  return std::nullopt;
}

namespace {

// The whole file as JSON, or a reason why not. Missing: discarded JSON with `note` empty.
nlohmann::json load_cache(const fs::path& file, std::string* note) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return nlohmann::json::value_t::discarded;
  const auto fail = [&](const std::string& why) {
    if (note) *note = file.string() + ": " + why;
    return nlohmann::json(nlohmann::json::value_t::discarded);
  };
  if (!fs::is_regular_file(file, ec)) return fail("not a regular file");
  const auto size = fs::file_size(file, ec);
  if (ec) return fail("cannot read its size (" + ec.message() + ")");
  if (size > kMaxCacheBytes) return fail("larger than 1 MiB (" + std::to_string(size) + " bytes)");
  std::ifstream in(file, std::ios::binary);
  if (!in) return fail("cannot be opened");
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.gcount() != static_cast<std::streamsize>(text.size())) return fail("short read");
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail("not JSON");
  if (!j.is_object() || !j.contains("format") || j["format"] != kFormat || !j.contains("entries") ||
      !j["entries"].is_object())
    return fail(std::string("not a ") + kFormat + " file (no \"format\" or \"entries\")");
  return j;
}

bool plausible_shape(const std::string& name) {
  if (name.empty() || name.size() > 40) return false;
  int parts = 1;
  for (char c : name) {
    if (c == 'x')
      ++parts;
    else if (c < '0' || c > '9')
      return false;
  }
  return parts == 3 && name.front() != 'x' && name.back() != 'x' &&
         name.find("xx") == std::string::npos;
}

}  // namespace

ShapeTimings read_kernel_cache(const fs::path& file, const std::string& key, std::string* note) {
  if (note) note->clear();
  ShapeTimings out;
  nlohmann::json j = load_cache(file, note);
  if (j.is_discarded()) return out;
  const auto& entries = j["entries"];
  const auto it = entries.find(key);
  if (it == entries.end()) return out;
  if (!it->is_object() || !it->contains("shapes") || !(*it)["shapes"].is_object()) {
    if (note) *note = file.string() + ": the entry for this machine has no \"shapes\" object";
    return out;
  }
  std::string skipped;
  for (const auto& [shape, e] : (*it)["shapes"].items()) {
    std::string why;
    std::optional<LinearKernel> kernel;
    if (!plausible_shape(shape))
      why = "malformed shape";
    else if (!e.is_object() || !e.contains("linear") || !e["linear"].is_string())
      why = "no \"linear\" kernel name";
    else if (!(kernel = linear_kernel_from_name(e["linear"].get<std::string>())))
      why = "unknown kernel name";
    else if (!e.contains("blas_seconds") || !usable_seconds(e["blas_seconds"]) ||
             !e.contains("onednn_seconds") || !usable_seconds(e["onednn_seconds"]))
      why = "timings missing, negative or not finite";
    if (!why.empty()) {
      if (skipped.size() < 200)
        skipped += (skipped.empty() ? "" : "; ") + shape.substr(0, 40) + ": " + why;
      continue;
    }
    out[shape] =
        KernelTiming{*kernel, e["blas_seconds"].get<double>(), e["onednn_seconds"].get<double>()};
  }
  if (!skipped.empty() && note) *note = file.string() + ": shape entries ignored (" + skipped + ")";
  return out;
}

bool write_kernel_cache(const fs::path& file, const std::string& key, const ShapeTimings& shapes,
                        std::string* error) {
  const auto fail = [&](const std::string& why) {
    if (error) *error = "cannot write " + file.string() + ": " + why;
    return false;
  };
  try {
    std::string ignored;
    nlohmann::json j = load_cache(file, &ignored);
    if (j.is_discarded()) j = {{"format", kFormat}, {"entries", nlohmann::json::object()}};
    j["version"] = kCalibrationVersion;
    auto& entries = j["entries"];
    while (entries.size() >= kMaxEntries && !entries.contains(key)) entries.erase(entries.begin());
    auto& entry = entries[key];
    if (!entry.is_object() || !entry.contains("shapes") || !entry["shapes"].is_object())
      entry = {{"shapes", nlohmann::json::object()}};
    entry["measured"] = common::timestamp_now(common::TimestampStyle::iso8601_utc);
    for (const auto& [shape, t] : shapes)
      if (entry["shapes"].size() < kMaxShapes || entry["shapes"].contains(shape))
        entry["shapes"][shape] = {{"linear", linear_kernel_name(t.kernel)},
                                  {"blas_seconds", t.blas_seconds},
                                  {"onednn_seconds", t.onednn_seconds}};
    std::error_code ec;
    if (file.has_parent_path()) {
      fs::create_directories(file.parent_path(), ec);
      if (ec)
        return fail("cannot create " + file.parent_path().string() + " (" + ec.message() + ")");
    }
    const fs::path temporary = file.string() + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(temporary, std::ios::trunc | std::ios::binary);
      out << j.dump(2) << '\n';
      out.close();
      if (!out) {
        fs::remove(temporary, ec);
        return fail("cannot write " + temporary.string());
      }
    }
    fs::rename(temporary, file, ec);
    if (ec) {
      std::error_code ignore;
      fs::remove(temporary, ignore);
      return fail(ec.message());
    }
    return true;
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace distil::model
