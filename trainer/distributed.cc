#include "trainer/distributed.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DISTIL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace distil::trainer {
namespace {

int parse_int_env(const char* name, int fallback, int min_value) {
  const char* raw = std::getenv(name);
  if (!raw || !*raw) return fallback;
  char* end = nullptr;
  const long value = std::strtol(raw, &end, 10);
  if (*end != '\0' || value < min_value || value > 1 << 20) {
    throw std::invalid_argument(std::string(name) + ": expected an integer >= " +
                                std::to_string(min_value) + ", got '" + raw + "'");
  }
  return static_cast<int>(value);
}

class SingleProcess : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(std::vector<torch::Tensor>&) override {}
  std::string backend() const override { return "single"; }
};

c10::intrusive_ptr<c10d::TCPStore> connect_store(const DistributedEnv& env) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = env.world_size;
  options.waitWorkers = true;
  options.timeout = std::chrono::seconds(600);
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
}

// Sum through the store: every rank publishes its bytes, reads all ranks' bytes and adds them in
// rank order (so the result is identical everywhere). A round's keys are deleted by their owner at
// the start of the next round, once every rank has confirmed reading them.
class StoreCommunicator : public Communicator {
 public:
  explicit StoreCommunicator(const DistributedEnv& env) : env_(env), store_(connect_store(env)) {}
  // Rank 0 hosts the store: it must outlive every other rank's last request, so all ranks check
  // in on the way out and rank 0 waits for them.
  ~StoreCommunicator() override {
    try {
      store_->add("shutdown", 1);
      if (env_.rank == 0) {
        while (store_->add("shutdown", 0) < env_.world_size) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
    } catch (const std::exception&) {
      // A peer that already failed cannot check in; nothing more to wait for.
    }
  }
  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string backend() const override { return "tcpstore"; }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    for (auto& tensor : tensors) {
      if (round_ > 0) {
        const std::string read_key = "ar/" + std::to_string(round_ - 1) + "/read";
        while (store_->add(read_key, 0) < env_.world_size) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        store_->deleteKey(key(round_ - 1, env_.rank));
      }
      auto local = tensor.detach().to(torch::kCPU).contiguous();
      const auto* bytes = static_cast<const uint8_t*>(local.data_ptr());
      const std::size_t size = local.numel() * local.element_size();
      store_->set(key(round_, env_.rank), std::vector<uint8_t>(bytes, bytes + size));
      auto sum = torch::zeros_like(local);
      for (int r = 0; r < env_.world_size; ++r) {
        const auto k = key(round_, r);
        store_->wait({k});
        auto data = store_->get(k);
        if (data.size() != size) {
          throw std::runtime_error("all_reduce: rank " + std::to_string(r) + " sent a different size");
        }
        auto other = torch::empty_like(local);
        std::memcpy(other.data_ptr(), data.data(), size);
        sum.add_(other);
      }
      store_->add("ar/" + std::to_string(round_) + "/read", 1);
      tensor.copy_(sum.to(tensor.device()));
      ++round_;
    }
  }

 private:
  static std::string key(int64_t round, int rank) {
    return "ar/" + std::to_string(round) + "/" + std::to_string(rank);
  }
  DistributedEnv env_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  int64_t round_ = 0;
};

#ifdef DISTIL_WITH_NCCL
class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(const DistributedEnv& env) : env_(env) {
    auto store = connect_store(env);
    auto options = c10::make_intrusive<c10d::ProcessGroupNCCL::Options>();
    group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, options);
  }
  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string backend() const override { return "nccl"; }
  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      group_->allreduce(one)->wait();
    }
  }

 private:
  DistributedEnv env_;
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> group_;
};
#endif

}  // namespace

double Communicator::all_reduce_sum(double value) {
  std::vector<torch::Tensor> one{torch::tensor({value}, torch::kDouble)};
  all_reduce_sum(one);
  return one[0].item<double>();
}

DistributedEnv distributed_env_from_environment() {
  DistributedEnv env;
  env.world_size = parse_int_env("WORLD_SIZE", 1, 1);
  env.rank = parse_int_env("RANK", 0, 0);
  if (env.rank >= env.world_size) {
    throw std::invalid_argument("RANK: " + std::to_string(env.rank) + " is not below WORLD_SIZE " +
                                std::to_string(env.world_size));
  }
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) env.master_addr = addr;
  env.master_port = parse_int_env("MASTER_PORT", 29500, 1);
  if (env.master_port > 65535) throw std::invalid_argument("MASTER_PORT: must be <= 65535");
  return env;
}

std::unique_ptr<Communicator> make_communicator(const DistributedEnv& env, torch::Device device) {
  if (env.world_size <= 1) return std::make_unique<SingleProcess>();
#ifdef DISTIL_WITH_NCCL
  if (device.is_cuda()) return std::make_unique<NcclCommunicator>(env);
#endif
  (void)device;
  return std::make_unique<StoreCommunicator>(env);
}

void all_reduce_gradients(Communicator& comm, const std::vector<torch::Tensor>& parameters) {
  if (comm.world_size() <= 1) return;
  // Parameters without a gradient on this rank still take part (as zeros) so every rank sends
  // the same layout.
  std::vector<torch::Tensor> grads;
  for (const auto& p : parameters) {
    auto& g = const_cast<torch::Tensor&>(p).mutable_grad();
    if (!g.defined()) g = torch::zeros_like(p);
    grads.push_back(g);
  }
  auto flat = torch::cat([&] {
    std::vector<torch::Tensor> views;
    for (const auto& g : grads) views.push_back(g.reshape({-1}).to(torch::kFloat));
    return views;
  }());
  std::vector<torch::Tensor> buffers{flat};
  comm.all_reduce_sum(buffers);
  int64_t offset = 0;
  for (auto& g : grads) {
    const int64_t n = g.numel();
    g.copy_(buffers[0].slice(0, offset, offset + n).view_as(g));
    offset += n;
  }
}

}  // namespace distil::trainer
