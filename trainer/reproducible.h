// Bitwise-reproducible CPU kernels: the same weights from the same recipe and seed on any x86-64
// machine of the same kernel class (AVX2+FMA, or baseline), whatever its vendor or vector width.
//
// LibTorch picks its kernels by CPU at run time: ATen's vectorised loops (AVX-512 vs AVX2),
// OpenBLAS's GEMM (Haswell, SkylakeX, Zen, ... each with its own blocking and summation order)
// and oneDNN's JIT linear layers. Each choice changes the rounding of every step, so the same
// pretraining drifted into a different model on another CPU. Pinning them makes runs repeatable
// at some cost in speed; threads are pinned to one because intra-op splits change sums too.
#pragma once

#include <map>
#include <string>

namespace distil::trainer {

// The environment that pins the kernels on this CPU: ATEN_CPU_CAPABILITY, OPENBLAS_CORETYPE and
// OPENBLAS_L2_SIZE,
// DISTIL_BLAS_LINEAR (no oneDNN linear), OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = 1, and
// DISTIL_REPRODUCIBLE=pinned as the marker that they are in force.
std::map<std::string, std::string> pinned_kernel_environment();

// The kernel class this process runs with, for reports: "pinned:avx2-haswell" and the like, or
// "unpinned" when the kernels follow the CPU.
std::string kernel_pinning();

// Called first thing in main(). When `always` is set (distil-demo pretrain) or DISTIL_REPRODUCIBLE=1 is
// in the environment, and the kernels are not pinned yet, sets the pinned environment and
// re-executes the program (OpenBLAS reads its core type when it is loaded, before main). Returns
// only when no re-exec was needed or it failed (then with a warning on stderr).
void pin_kernels_if_requested(int argc, char** argv, bool always);

}  // namespace distil::trainer
