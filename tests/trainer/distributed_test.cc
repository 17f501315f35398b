// Data parallel on CPU: two real processes sum tensors through the TCPStore communicator.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cstdio>

#include "trainer/distributed.h"

namespace distil::trainer {
namespace {

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Each rank contributes (rank + 1) * base; the sum is 3 * base on both, three rounds in a row.
bool run_rank(int rank, int port) {
  DistributedEnv env;
  env.rank = rank;
  env.world_size = 2;
  env.master_port = port;
  auto comm = make_communicator(env, torch::kCPU);
  if (comm->backend() != "tcpstore") return false;
  for (int round = 0; round < 3; ++round) {
    auto base = torch::arange(5, torch::kFloat) + round;
    std::vector<torch::Tensor> tensors{base * (rank + 1), torch::full({2, 2}, rank + 1.0)};
    comm->all_reduce_sum(tensors);
    if (!torch::equal(tensors[0], base * 3) || !torch::equal(tensors[1], torch::full({2, 2}, 3.0))) return false;
  }
  return comm->all_reduce_sum(rank == 0 ? 1.5 : 2.0) == 3.5;
}

TEST(DataParallel, StoreCommunicatorSumsAcrossTwoProcesses) {
  const int port = free_port();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      _exit(run_rank(1, port) ? 0 : 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank 1: %s\n", e.what());
      _exit(2);
    }
  }
  const bool ok = run_rank(0, port);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(ok);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(DataParallel, EnvironmentVariablesAreValidated) {
  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "5", 1);
  EXPECT_THROW(distributed_env_from_environment(), std::invalid_argument);
  setenv("RANK", "x", 1);
  EXPECT_THROW(distributed_env_from_environment(), std::invalid_argument);
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
  auto env = distributed_env_from_environment();
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(make_communicator(env, torch::kCPU)->backend(), "single");
}

}  // namespace
}  // namespace distil::trainer
