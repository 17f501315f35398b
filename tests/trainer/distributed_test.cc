// Data parallel on CPU: two real processes run c10d's Gloo engine (all-reduce, reduce-scatter,
// all-gather) and the sharded AdamW, checked against one process doing the same sums and steps.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include <ATen/CPUGeneratorImpl.h>

#include "tests/support/free_port.h"
#include "trainer/distributed.h"

namespace distil::trainer {
namespace {

// Runs `body(rank)` in two processes (this one is rank 0) and expects both to return true.
template <typename Body>
void run_two_ranks(Body body) {
  const int port = test_support::free_tcp_port();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  auto env_for = [port](int rank) {
    DistributedEnv env;
    env.rank = env.local_rank = rank;
    env.world_size = env.local_world_size = 2;
    env.master_port = port;
    return env;
  };
  if (child == 0) {
    try {
      _exit(body(env_for(1)) ? 0 : 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank 1: %s\n", e.what());
      _exit(2);
    }
  }
  bool ok = false;
  try {
    ok = body(env_for(0));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank 0: " << e.what();
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(ok) << "rank 0's results differ";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank 1 failed (status " << status << ")";
}

// Each rank contributes (rank + 1) * base; the sum is 3 * base on both, three rounds in a row,
// then a reduce-scatter and an all-gather of uneven-looking (but padded) data.
TEST(DataParallel, GlooSumsScattersAndGathersAcrossTwoProcesses) {
  run_two_ranks([](const DistributedEnv& env) {
    auto comm = make_communicator(env, torch::kCPU);
    if (comm->backend() != "gloo" || comm->rank() != env.rank || comm->world_size() != 2) return false;
    const int rank = env.rank;
    for (int round = 0; round < 3; ++round) {
      auto base = torch::arange(5, torch::kFloat) + round;
      std::vector<torch::Tensor> tensors{base * (rank + 1), torch::full({2, 2}, rank + 1.0)};
      comm->all_reduce_sum(tensors);
      if (!torch::equal(tensors[0], base * 3) || !torch::equal(tensors[1], torch::full({2, 2}, 3.0))) return false;
    }
    if (comm->all_reduce_sum(rank == 0 ? 1.5 : 2.0) != 3.5) return false;
    if (comm->all_reduce_sum(std::vector<double>{1.0, rank * 10.0}) != std::vector<double>({2.0, 10.0})) return false;
    // A non-contiguous view is reduced in place.
    auto matrix = torch::arange(6, torch::kFloat).view({2, 3}) * (rank + 1);
    std::vector<torch::Tensor> column{matrix.t()};
    comm->all_reduce_sum(column);
    if (!torch::equal(matrix, torch::arange(6, torch::kFloat).view({2, 3}) * 3)) return false;

    auto full = torch::arange(8, torch::kFloat) * (rank + 1);
    auto shard = torch::empty({4});
    comm->reduce_scatter_sum(full, shard);
    if (!torch::equal(shard, torch::arange(8, torch::kFloat).narrow(0, 4 * rank, 4) * 3)) return false;
    auto gathered = torch::empty({8});
    comm->all_gather(torch::full({4}, static_cast<float>(rank)), gathered);
    if (!torch::equal(gathered, torch::cat({torch::zeros({4}), torch::ones({4})}))) return false;
    comm->barrier();
    return true;
  });
}

// Parameters of awkward sizes (so shards cut through tensors, with padding at the end), each
// rank with its own gradients: the sharded AdamW's parameters after three steps equal one
// process's torch AdamW on the summed gradients (rounding of the norm aside), in stage 1 and 2.
std::vector<torch::Tensor> make_parameters() {
  torch::manual_seed(7);
  return {torch::randn({3, 5}).requires_grad_(), torch::randn({7}).requires_grad_(),
          torch::randn({2, 2, 3}).requires_grad_()};
}

torch::Tensor gradient_for(int rank, int step, const torch::Tensor& p, int index) {
  auto generator = at::detail::createCPUGenerator(1000 * rank + 10 * step + index);
  return torch::randn(p.sizes(), generator);
}

torch::optim::AdamWOptions adamw_options() {
  torch::optim::AdamWOptions options(0.05);
  options.weight_decay(0.1);
  return options;
}

TEST(DataParallel, ShardedAdamWEqualsAdamWOnTheSummedGradients) {
  for (int stage : {1, 2}) {
    SCOPED_TRACE("zero stage " + std::to_string(stage));
    // The reference: one process, gradients of both ranks summed, clipped to norm 1.
    auto reference = make_parameters();
    torch::optim::AdamW adamw(reference, adamw_options());
    for (int step = 0; step < 3; ++step) {
      double norm2 = 0;
      for (std::size_t i = 0; i < reference.size(); ++i) {
        auto g = gradient_for(0, step, reference[i], i) + gradient_for(1, step, reference[i], i);
        reference[i].mutable_grad() = g;
        norm2 += g.pow(2).sum().item<double>();
      }
      const double scale = 1.0 / (std::sqrt(norm2) + 1e-6);
      for (auto& p : reference) p.mutable_grad().mul_(scale);
      adamw.step();
      adamw.zero_grad();
    }
    run_two_ranks([&](const DistributedEnv& env) {
      auto comm = make_communicator(env, torch::kCPU);
      auto params = make_parameters();
      ShardedAdamW sharded(params, adamw_options(), *comm, stage);
      if (sharded.total_numel() != 15 + 7 + 12 || sharded.shard_numel() != 17) return false;
      for (int step = 0; step < 3; ++step) {
        for (std::size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = gradient_for(env.rank, step, params[i], i);
        const double norm = sharded.reduce_gradients();
        if (stage == 2 && params[0].grad().defined()) return false;  // stage 2 drops the full gradients
        sharded.scale_gradients(1.0 / (norm + 1e-6));
        sharded.step(0.05);
        sharded.zero_grad();
      }
      for (std::size_t i = 0; i < params.size(); ++i) {
        if (!torch::allclose(params[i], reference[i], 1e-5, 1e-6)) {
          std::fprintf(stderr, "rank %d: parameter %zu differs by %g\n", env.rank, i,
                       (params[i] - reference[i]).abs().max().item<double>());
          return false;
        }
      }
      // Save, perturb, load: the shard and the parameters come back.
      const auto file = std::string(DISTIL_BINARY_DIR) + "/tests/trainer/shard-" + std::to_string(getpid()) + ".pt";
      sharded.save(file);
      std::vector<torch::Tensor> kept;
      for (auto& p : params) kept.push_back(p.detach().clone());
      {
        torch::NoGradGuard no_grad;
        for (auto& p : params) p.add_(1.0);
      }
      sharded.load(file);
      std::remove(file.c_str());
      for (std::size_t i = 0; i < params.size(); ++i)
        if (!torch::equal(params[i].detach(), kept[i])) return false;
      return true;
    });
  }
}

TEST(DataParallel, EnvironmentVariablesAreValidated) {
  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "5", 1);
  EXPECT_THROW(distributed_env_from_environment(), std::invalid_argument);
  setenv("RANK", "x", 1);
  EXPECT_THROW(distributed_env_from_environment(), std::invalid_argument);
  // torchrun's variables: LOCAL_RANK picks the GPU, and must lie below LOCAL_WORLD_SIZE.
  setenv("RANK", "1", 1);
  setenv("LOCAL_RANK", "1", 1);
  setenv("LOCAL_WORLD_SIZE", "2", 1);
  auto launched = distributed_env_from_environment();
  EXPECT_EQ(launched.rank, 1);
  EXPECT_EQ(launched.local_rank, 1);
  EXPECT_EQ(launched.local_world_size, 2);
  setenv("LOCAL_RANK", "2", 1);
  EXPECT_THROW(distributed_env_from_environment(), std::invalid_argument);
  setenv("LOCAL_WORLD_SIZE", "3", 1);
  EXPECT_THROW(distributed_env_from_environment(), std::invalid_argument);  // more on the node than in the world
  unsetenv("LOCAL_RANK");
  unsetenv("LOCAL_WORLD_SIZE");
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
  auto env = distributed_env_from_environment();
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(make_communicator(env, torch::kCPU)->backend(), "single");
}

}  // namespace
}  // namespace distil::trainer
