// Data parallel: one process per device, gradients summed across processes after backward.
// Launched with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (torchrun, Slurm or by hand). With a
// CUDA build that found NCCL (DISTIL_WITH_NCCL) the sum runs on NCCL; otherwise through a
// c10d::TCPStore on the master (CPU; fine for small models and tests, not for large ones).
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
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// Reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (absent: single process). Throws
// std::invalid_argument naming the variable for malformed values.
DistributedEnv distributed_env_from_environment();

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In-place sum over processes; every process gets bitwise the same result.
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  double all_reduce_sum(double value);
  virtual std::string backend() const = 0;
};

// world_size 1 -> a no-op communicator. `device` picks NCCL (cuda, when built with it) or the
// store-based CPU sum.
std::unique_ptr<Communicator> make_communicator(const DistributedEnv& env, torch::Device device);

// Sums the gradients of `parameters` across processes (one flat buffer per dtype/device).
void all_reduce_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters);

}  // namespace distil::trainer
