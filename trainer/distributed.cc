#include "trainer/distributed.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include <chrono>
#include <cstdlib>
#include <stdexcept>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#if defined(USE_C10D_GLOO) && __has_include(<gloo/config.h>)
#define DISTIL_WITH_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DISTIL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace distil::trainer {
namespace {

// LibTorch 2 split the collective engines ("backends") from the ProcessGroup that dispatches to
// them; 1.13's ProcessGroupGloo/NCCL are ProcessGroups themselves. Both expose the same calls.
#if TORCH_VERSION_MAJOR >= 2
using Engine = c10d::Backend;
#else
using Engine = c10d::ProcessGroup;
#endif

int parse_int_env(const char* name, int fallback, int min_value, int max_value = 1 << 20) {
  const char* raw = std::getenv(name);
  if (!raw || !*raw) return fallback;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(raw, &end, 10);
  if (errno != 0 || *end != '\0' || value < min_value || value > max_value) {
    throw std::invalid_argument(std::string(name) + ": expected an integer in [" + std::to_string(min_value) + ", " +
                                std::to_string(max_value) + "], got '" + raw + "'");
  }
  return static_cast<int>(value);
}

class SingleProcess : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(std::vector<torch::Tensor>&) override {}
  void reduce_scatter_sum(const torch::Tensor& full, torch::Tensor& shard) override {
    shard.copy_(full.reshape({-1}).narrow(0, 0, shard.numel()).view_as(shard));
  }
  void all_gather(const torch::Tensor& shard, torch::Tensor& full) override {
    full.reshape({-1}).narrow(0, 0, shard.numel()).copy_(shard.reshape({-1}));
  }
};

c10::intrusive_ptr<c10d::TCPStore> connect_store(const DistributedEnv& env) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = env.world_size;
  options.waitWorkers = true;
  options.timeout = std::chrono::seconds(600);
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous at MASTER_ADDR " + env.master_addr + ":" + std::to_string(env.master_port) +
                             " (rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                             ") failed: " + e.what());
  }
}

// One c10d engine; every call blocks until the collective is done on this rank.
class ProcessGroupCommunicator : public Communicator {
 public:
  ProcessGroupCommunicator(const DistributedEnv& env, c10::intrusive_ptr<Engine> engine, std::string name)
      : env_(env), engine_(std::move(engine)), name_(std::move(name)) {}
  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string backend() const override { return name_; }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    for (auto& tensor : tensors) {
      // The engines want dense contiguous tensors; a view is reduced through a copy.
      std::vector<at::Tensor> one{tensor.is_contiguous() ? tensor : tensor.contiguous()};
      engine_->allreduce(one)->wait();
      if (!one[0].is_same(tensor)) tensor.copy_(one[0]);
    }
  }

  // Gloo has no reduce-scatter in LibTorch 1.13, so this is an all-reduce and a slice: the same
  // bytes on the wire as NCCL's ring all-reduce, and every rank's slice is bitwise what a
  // reduce-scatter would give.
  void reduce_scatter_sum(const torch::Tensor& full, torch::Tensor& shard) override {
    if (full.numel() != shard.numel() * env_.world_size)
      throw std::invalid_argument("reduce_scatter_sum: full tensor is not world_size shards");
    std::vector<at::Tensor> one{full.contiguous().clone()};
    engine_->allreduce(one)->wait();
    shard.copy_(one[0].reshape({-1}).narrow(0, shard.numel() * env_.rank, shard.numel()).view_as(shard));
  }

  void all_gather(const torch::Tensor& shard, torch::Tensor& full) override {
    if (full.numel() != shard.numel() * env_.world_size)
      throw std::invalid_argument("all_gather: full tensor is not world_size shards");
    std::vector<at::Tensor> input{shard.reshape({-1}).contiguous()};
    std::vector<std::vector<at::Tensor>> output(1);
    for (int r = 0; r < env_.world_size; ++r) output[0].push_back(torch::empty_like(input[0]));
    engine_->allgather(output, input)->wait();
    full.reshape({-1}).copy_(torch::cat(output[0]));
  }

 private:
  DistributedEnv env_;
  c10::intrusive_ptr<Engine> engine_;
  std::string name_;
};

bool is_loopback(const std::string& address) {
  if (address == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return address == "::1";
}

#ifdef DISTIL_WITH_GLOO
std::unique_ptr<Communicator> make_gloo(const DistributedEnv& env) {
  auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(600));
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (is_loopback(env.master_addr)) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  options->threads = 2;
  auto store = connect_store(env);
  auto engine = c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, options);
  return std::make_unique<ProcessGroupCommunicator>(env, std::move(engine), "gloo");
}
#endif

#ifdef DISTIL_WITH_NCCL
std::unique_ptr<Communicator> make_nccl(const DistributedEnv& env) {
  auto store = connect_store(env);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  auto engine = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, options);
  return std::make_unique<ProcessGroupCommunicator>(env, std::move(engine), "nccl");
}
#endif

}  // namespace

double Communicator::all_reduce_sum(double value) { return all_reduce_sum(std::vector<double>{value}).front(); }

std::vector<double> Communicator::all_reduce_sum(const std::vector<double>& values) {
  if (world_size() <= 1 || values.empty()) return values;
  std::vector<torch::Tensor> one{torch::tensor(values, torch::kDouble)};
  all_reduce_sum(one);
  const auto* data = one[0].data_ptr<double>();
  return std::vector<double>(data, data + values.size());
}

void Communicator::barrier() { all_reduce_sum(0.0); }

std::vector<std::string> Communicator::all_gather_strings(const std::string& mine) {
  if (world_size() <= 1) return {mine};
  // Each rank's length at its own index, so one sum tells every rank every length.
  std::vector<double> lengths(world_size(), 0.0);
  lengths[rank()] = static_cast<double>(mine.size());
  lengths = all_reduce_sum(lengths);
  int64_t width = 1;
  for (double l : lengths) width = std::max<int64_t>(width, static_cast<int64_t>(l));
  auto padded = torch::zeros({width}, torch::kByte);
  std::memcpy(padded.data_ptr(), mine.data(), mine.size());
  auto all = torch::empty({width * world_size()}, torch::kByte);
  all_gather(padded, all);
  const auto* bytes = static_cast<const char*>(all.data_ptr());
  std::vector<std::string> out;
  for (int r = 0; r < world_size(); ++r) out.emplace_back(bytes + r * width, static_cast<std::size_t>(lengths[r]));
  return out;
}

DistributedEnv distributed_env_from_environment() {
  DistributedEnv env;
  env.world_size = parse_int_env("WORLD_SIZE", 1, 1);
  env.rank = parse_int_env("RANK", 0, 0);
  if (env.rank >= env.world_size) {
    throw std::invalid_argument("RANK: " + std::to_string(env.rank) + " is not below WORLD_SIZE " +
                                std::to_string(env.world_size));
  }
  env.local_world_size = parse_int_env("LOCAL_WORLD_SIZE", env.world_size, 1);
  env.local_rank = parse_int_env("LOCAL_RANK", env.rank, 0);
  if (env.local_rank >= env.local_world_size) {
    throw std::invalid_argument("LOCAL_RANK: " + std::to_string(env.local_rank) + " is not below LOCAL_WORLD_SIZE " +
                                std::to_string(env.local_world_size));
  }
  if (env.local_world_size > env.world_size) {
    throw std::invalid_argument("LOCAL_WORLD_SIZE: " + std::to_string(env.local_world_size) + " exceeds WORLD_SIZE " +
                                std::to_string(env.world_size));
  }
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) env.master_addr = addr;
  env.master_port = parse_int_env("MASTER_PORT", 29500, 1, 65535);
  return env;
}

std::unique_ptr<Communicator> make_communicator(const DistributedEnv& env, torch::Device device) {
  // DISTIL_PROCESS_GROUP=1 runs even one process through the real engine (a one-GPU machine can
  // then exercise the NCCL path, which refuses two ranks on one GPU).
  const char* force = std::getenv("DISTIL_PROCESS_GROUP");
  if (env.world_size <= 1 && !(force && std::string(force) == "1")) return std::make_unique<SingleProcess>();
  if (device.is_cuda()) {
#ifdef DISTIL_WITH_NCCL
    return make_nccl(env);
#else
    throw std::runtime_error("WORLD_SIZE " + std::to_string(env.world_size) +
                             " on CUDA needs NCCL, and this build has none (configure with NCCL found, see "
                             "scripts/build-gpu.sh)");
#endif
  }
#ifdef DISTIL_WITH_GLOO
  return make_gloo(env);
#else
  throw std::runtime_error("WORLD_SIZE " + std::to_string(env.world_size) +
                           " on CPU needs Gloo, and this LibTorch was built without it (Debian: "
                           "install libgloo-dev, scripts/setup.sh does)");
#endif
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

// --- ShardedAdamW --------------------------------------------------------------------------------

ShardedAdamW::ShardedAdamW(std::vector<torch::Tensor> parameters, const torch::optim::AdamWOptions& options,
                           Communicator& comm, int stage)
    : parameters_(std::move(parameters)), comm_(comm), stage_(stage) {
  if (stage_ < 1 || stage_ > 2) throw std::invalid_argument("ShardedAdamW: stage must be 1 or 2");
  for (const auto& p : parameters_) total_numel_ += p.numel();
  const int64_t world = comm_.world_size();
  shard_numel_ = (total_numel_ + world - 1) / world;
  torch::NoGradGuard no_grad;
  const int64_t begin = shard_numel_ * comm_.rank();
  master_ = torch::zeros({shard_numel_}, parameters_.front().options().dtype(torch::kFloat).requires_grad(false));
  for_each_overlap(begin, begin + shard_numel_, [&](std::size_t i, int64_t at, int64_t into, int64_t count) {
    master_.narrow(0, into, count).copy_(parameters_[i].detach().reshape({-1}).narrow(0, at, count));
  });
  master_.set_requires_grad(true);
  optimizer_ = std::make_unique<torch::optim::AdamW>(std::vector<torch::Tensor>{master_}, options);
}

template <typename Fn>
void ShardedAdamW::for_each_overlap(int64_t begin, int64_t end, Fn&& fn) const {
  int64_t offset = 0;
  for (std::size_t i = 0; i < parameters_.size() && offset < end; ++i) {
    const int64_t n = parameters_[i].numel();
    const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + n);
    if (lo < hi) fn(i, lo - offset, lo - begin, hi - lo);
    offset += n;
  }
}

double ShardedAdamW::reduce_gradients() {
  torch::NoGradGuard no_grad;
  const auto options = master_.options().requires_grad(false);
  auto slice = torch::zeros({shard_numel_}, options);
  const int64_t world = comm_.world_size();
  // Window w of every rank's shard: rank r's part is [r * shard + w0, r * shard + w1).
  const int64_t step = std::max<int64_t>(1, ShardedAdamW::kWindowElements / world);  // kWindowElements in all
  for (int64_t w0 = 0; w0 < shard_numel_; w0 += step) {
    const int64_t w1 = std::min(shard_numel_, w0 + step), width = w1 - w0;
    auto window = torch::zeros({width * world}, options);
    for (int64_t r = 0; r < world; ++r) {
      const int64_t base = r * shard_numel_;
      for_each_overlap(base + w0, base + w1, [&](std::size_t i, int64_t at, int64_t into, int64_t count) {
        const auto& g = parameters_[i].grad();
        if (g.defined())
          window.narrow(0, r * width + into, count).copy_(g.reshape({-1}).narrow(0, at, count));
      });
    }
    auto part = slice.narrow(0, w0, width);
    comm_.reduce_scatter_sum(window, part);
  }
    master_.mutable_grad() = slice;
  if (stage_ >= 2) {
    for (auto& p : parameters_) p.mutable_grad() = torch::Tensor();
  }
  // Padding is zero everywhere, so it adds nothing to the norm.
  const double local = slice.pow(2).sum().item<double>();
  return std::sqrt(comm_.all_reduce_sum(local));
}

void ShardedAdamW::scale_gradients(double factor) {
  torch::NoGradGuard no_grad;
  if (master_.grad().defined()) master_.mutable_grad().mul_(factor);
}

void ShardedAdamW::step(double lr) {
  for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  optimizer_->step();
  publish_master();
}

void ShardedAdamW::publish_master() {
  torch::NoGradGuard no_grad;
  const int64_t world = comm_.world_size();
  const auto master = master_.detach();
  const int64_t step = std::max<int64_t>(1, ShardedAdamW::kWindowElements / world);
  for (int64_t w0 = 0; w0 < shard_numel_; w0 += step) {
    const int64_t w1 = std::min(shard_numel_, w0 + step), width = w1 - w0;
    auto window = torch::empty({width * world}, master.options());
    comm_.all_gather(master.narrow(0, w0, width), window);
    for (int64_t r = 0; r < world; ++r) {
      const int64_t base = r * shard_numel_;
      for_each_overlap(base + w0, base + w1, [&](std::size_t i, int64_t at, int64_t into, int64_t count) {
        parameters_[i].detach().view({-1}).narrow(0, at, count).copy_(window.narrow(0, r * width + into, count));
      });
    }
  }
}

void ShardedAdamW::zero_grad() {
  for (auto& p : parameters_) {
    if (!p.grad().defined()) continue;
    if (stage_ >= 2) {
      p.mutable_grad() = torch::Tensor();
    } else {
      p.mutable_grad().detach_();
      p.mutable_grad().zero_();
    }
  }
  master_.mutable_grad() = torch::Tensor();
}

void ShardedAdamW::save(const std::string& path) const {
  torch::serialize::OutputArchive archive;
  archive.write("master", master_.detach());
  archive.write("total_numel", torch::tensor({total_numel_}, torch::kLong));
  archive.write("world_size", torch::tensor({static_cast<int64_t>(comm_.world_size())}, torch::kLong));
  torch::serialize::OutputArchive state;
  optimizer_->save(state);
  archive.write("adamw", state);
  archive.save_to(path);
}

void ShardedAdamW::load(const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  torch::Tensor master, total, world;
  archive.read("master", master);
  archive.read("total_numel", total);
  archive.read("world_size", world);
  if (total.item<int64_t>() != total_numel_ || world.item<int64_t>() != comm_.world_size() ||
      master.numel() != shard_numel_) {
    throw std::runtime_error(path + ": optimizer shard of " + std::to_string(total.item<int64_t>()) +
                             " parameters over " + std::to_string(world.item<int64_t>()) + " ranks, but this run has " +
                             std::to_string(total_numel_) + " over " + std::to_string(comm_.world_size()));
  }
  {
    torch::NoGradGuard no_grad;
    master_.copy_(master);
  }
  torch::serialize::InputArchive state;
  archive.read("adamw", state);
  optimizer_->load(state);
  publish_master();
}

}  // namespace distil::trainer
