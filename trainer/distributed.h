// Data parallel: one process per device, launched the way torchrun and Slurm launch them
// (RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT). Collectives
// run on c10d process groups: Gloo for CPU tensors, NCCL for CUDA tensors (in a CUDA build that
// found NCCL). Rendezvous is a c10d::TCPStore hosted by rank 0.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace distil::trainer {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // the process's index on its node: picks its GPU
  int local_world_size = 1;  // processes on this node (they share its RAM)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (absent: a single
// process; LOCAL_RANK absent: RANK, LOCAL_WORLD_SIZE absent: WORLD_SIZE, as on one node). Throws
// std::invalid_argument naming the variable for malformed or inconsistent values.
DistributedEnv distributed_env_from_environment();

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "single", "gloo" or "nccl".
  virtual std::string backend() const = 0;
  // In-place sum over processes; every process gets bitwise the same result.
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  // `full` (same shape everywhere) is summed over processes and this rank's slice of `shard`'s
  // size, starting at rank * shard.numel(), lands in `shard`. full.numel() must equal
  // shard.numel() * world_size (pad it).
  virtual void reduce_scatter_sum(const torch::Tensor& full, torch::Tensor& shard) = 0;
  // Concatenates every rank's `shard` (equal sizes), in rank order, into `full`.
  virtual void all_gather(const torch::Tensor& shard, torch::Tensor& full) = 0;

  double all_reduce_sum(double value);
  // Sums each entry over processes (one collective for the whole vector).
  std::vector<double> all_reduce_sum(const std::vector<double>& values);
  // Every rank's string, in rank order, on every rank.
  std::vector<std::string> all_gather_strings(const std::string& mine);
  // Returns once every process has called it.
  void barrier();
};

// world_size 1 -> a no-op communicator (unless DISTIL_PROCESS_GROUP=1). Otherwise a c10d process group for `device`: NCCL for
// cuda (in a build with NCCL; otherwise an error), Gloo for cpu. Gloo binds to the interface
// named by GLOO_SOCKET_IFNAME when set, else to the address that reaches MASTER_ADDR's host.
std::unique_ptr<Communicator> make_communicator(const DistributedEnv& env, torch::Device device);

// Sums the gradients of `parameters` across processes (one flat buffer per dtype/device).
void all_reduce_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters);

// ZeRO stage 1 / 2 for AdamW: every rank keeps an fp32 master copy and the AdamW moments of only
// its 1/world_size slice of the flattened trainable parameters. After backward, gradients are
// reduce-scattered onto the slices, the global gradient norm is reduced, the slice is clipped and
// stepped, and the updated slices are all-gathered back into every rank's full parameters (cast
// to their dtype). Stage 2 also drops the full gradients right after they are reduced, so the
// next step's rollouts and teacher scoring run without them in memory. AdamW is elementwise, so
// this equals unsharded AdamW on fp32 parameters up to the rounding of the global norm.
class ShardedAdamW {
 public:
  // Collectives run on windows of the padded flat layout holding this many elements over all
  // ranks, so no rank ever builds a full flat fp32 copy of the gradients or parameters (8 bytes a
  // parameter for an 8B model is 64 GB).
  static constexpr int64_t kWindowElements = 32LL * 1024 * 1024;

  ShardedAdamW(std::vector<torch::Tensor> parameters, const torch::optim::AdamWOptions& options,
               Communicator& comm, int stage);
  // Reduces the gradients onto this rank's slice and returns the global L2 norm (same on every rank).
  double reduce_gradients();
  // Multiplies the reduced slice's gradient (grad clipping).
  void scale_gradients(double factor);
  // One AdamW step at `lr` on the slice, then every rank's parameters are refreshed.
  void step(double lr);
  // Parameter gradients to zero (stage 1) or undefined (stage 2), and the slice's gradient cleared.
  void zero_grad();
  int64_t shard_numel() const { return shard_numel_; }
  int64_t total_numel() const { return total_numel_; }
  // This rank's master slice, moments and step counts; a checkpoint holds one file per rank.
  void save(const std::string& path) const;
  // Restores a slice saved by the same rank of the same world size and parameter layout, and
  // writes the master copy back into the parameters (so a resumed run continues from fp32).
  void load(const std::string& path);

 private:
  // Calls fn(parameter index, offset in it, offset from `begin`, count) for every parameter
  // overlapping [begin, end) of the flat layout.
  template <typename Fn>
  void for_each_overlap(int64_t begin, int64_t end, Fn&& fn) const;
  void publish_master();

  std::vector<torch::Tensor> parameters_;
  Communicator& comm_;
  int stage_;
  int64_t total_numel_ = 0, shard_numel_ = 0;
  torch::Tensor master_;  // [shard_numel] fp32 leaf; its .grad() is the reduced gradient slice
  std::unique_ptr<torch::optim::AdamW> optimizer_;
};

}  // namespace distil::trainer
