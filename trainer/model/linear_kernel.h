// Which kernel runs the fp32 CPU projections (linear layers), and the per-machine cache of that
// choice. No LibTorch here: the timing itself is calibrate_linear_kernel() in model.cc.
//
// Two kernels: `blas` (at::linear / at::mm, i.e. the BLAS LibTorch was built with: OpenBLAS on
// Debian) and `onednn` (at::mkldnn_linear, oneDNN's JIT kernels, which the same LibTorch ships).
// Which one is faster depends on the machine and on the shape (docs/model.md#which-cpu-kernel), so
// the choice is made per projection shape (rows rounded up to a power of two, in, out) by
// measuring both kernels' forward + backward the first time the shape is seen, and remembered per
// CPU model + ISA flags + LibTorch version + thread counts in a small JSON file.
//
// Environment:
//   DISTIL_LINEAR_KERNEL=blas|onednn|auto  forces a kernel (auto, the default: measure)
//   DISTIL_BLAS_LINEAR=1                    forces blas (older spelling, kept)
//   DISTIL_REPRODUCIBLE=pinned:...          (trainer/reproducible.h) forces blas, and nothing is
//   measured DISTIL_KERNEL_CACHE=FILE | off          the cache file (default
//   $XDG_CACHE_HOME/distil/cpu_kernels.json,
//                                           else ~/.cache/distil/cpu_kernels.json); off: measure
//                                           every run
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/cpu_info.h"

namespace distil::model {

enum class LinearKernel { blas, onednn };
const char* linear_kernel_name(LinearKernel kernel);  // "blas" | "onednn"
std::optional<LinearKernel> linear_kernel_from_name(std::string_view name);

// Keeps freed heap memory in the process for reuse instead of returning it to the kernel (glibc:
// blocks up to 32 MiB come from the heap rather than fresh mmaps, and the heap is not trimmed), so
// that the buffers each training step allocates and frees anew are not page-faulted in again on
// every step (docs/model.md#which-cpu-kernel: on some VMs a page fault costs ~11 us). Process-wide,
// memory stays at the peak; the programs (distil-train, distil-eval, distil-demo, model_bench)
// call it first thing. With `honour_environment`, DISTIL_KEEP_FREED_MEMORY=0 leaves malloc alone.
// Returns whether it is in force (false where the C library has no such setting).
bool keep_freed_cpu_memory(bool honour_environment = true);
bool freed_cpu_memory_kept();  // whether keep_freed_cpu_memory() is in force (part of the cache
                               // key)

// Reads an environment variable (std::getenv by default; tests pass their own).
using GetEnv = std::function<const char*(const char*)>;

// A kernel forced by the environment (see above), with the reason; nullopt = measure. An
// unknown DISTIL_LINEAR_KERNEL value is reported in `warning` and ignored.
struct ForcedKernel {
  LinearKernel kernel;
  std::string
      reason;  // "DISTIL_LINEAR_KERNEL=onednn", "reproducible mode (pinned:avx2-haswell)", ...
};
std::optional<ForcedKernel> forced_linear_kernel(const GetEnv& getenv,
                                                 std::string* warning = nullptr);

// What the measurement depends on. Changes with the CPU (model name, family/model/stepping, ISA
// flags), the LibTorch version, the intra-op and BLAS thread counts, the environment variables that
// re-pick kernels (ATEN_CPU_CAPABILITY, OPENBLAS_CORETYPE, ONEDNN_MAX_CPU_ISA/DNNL_MAX_CPU_ISA,
// glibc's MALLOC_* tunables), whether freed memory is kept (keep_freed_cpu_memory) and the
// calibration's own version.
struct KernelCacheKeyInputs {
  common::CpuInfo cpu;
  std::string torch_version;
  int threads = 1;
  int blas_threads = 0;            // 0: unknown / not a separate pool
  std::string kernel_env;          // "OPENBLAS_CORETYPE=Haswell" etc., "" when none is set
  bool freed_memory_kept = false;  // keep_freed_cpu_memory() in force
};
std::string kernel_env_of(const GetEnv& getenv);
std::string kernel_cache_key(const KernelCacheKeyInputs& inputs);

// One shape's measurement: the median seconds of forward + backward with each kernel.
struct KernelTiming {
  LinearKernel kernel = LinearKernel::blas;  // the faster
  double blas_seconds = 0;
  double onednn_seconds = 0;
};
// Measured shapes by shape_name().
using ShapeTimings = std::map<std::string, KernelTiming>;

// The rows a shape is measured and looked up at: the next power of two (at most 4096), so that
// batches of similar size share one measurement.
int64_t calibration_rows(int64_t rows);
// "256x128x768" (rows x in x out).
std::string shape_name(int64_t rows, int64_t in, int64_t out);

// The cache file: nullopt when DISTIL_KERNEL_CACHE=off or no home/cache directory is known.
std::optional<std::filesystem::path> kernel_cache_path(const GetEnv& getenv);

// The shapes measured before on the machine `key` names. A missing file or key is empty with
// `note` empty; a file that cannot be used (unreadable, larger than 1 MiB, not JSON, wrong shape)
// is empty with the reason in `note`, and a bad shape entry (unknown kernel name, non-finite or
// negative timings, a malformed shape) is skipped with the reason in `note` (the caller logs it).
ShapeTimings read_kernel_cache(const std::filesystem::path& file, const std::string& key,
                               std::string* note);
// Merges `shapes` into the entry of `key` (other keys and shapes kept; an unusable old file is
// replaced), written to a temporary file and renamed into place. Returns false with the reason in
// `error` instead of throwing: a cache that cannot be written must not stop training.
bool write_kernel_cache(const std::filesystem::path& file, const std::string& key,
                        const ShapeTimings& shapes, std::string* error);

}  // namespace distil::model
