// The real `distil-env serve` binary as a child process: SIGTERM drains requests in flight and
// exits 0, and the client rides through a restart of the server.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "env_server/client/feedback_client.h"
#include "tests/env_server/test_support.h"

namespace distil::env {
namespace {

using nlohmann::json;
using namespace distil::env::testing;

std::vector<std::string> serve_args(std::uint16_t port) {
  return {"serve", "--tasks", tasks_file(), "--port", std::to_string(port), "--workers", "2", "--access-log", "off"};
}

TEST(EnvServerProcess, PrintsPortAndRefusesBadArguments) {
  ServerProcess server(serve_args(0));
  ASSERT_NE(server.port(), 0) << "no 'listening on' line from " << env_binary();
  EXPECT_EQ(call(server.port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(server.terminate(10.0), std::optional<int>(0));

  ServerProcess missing({"serve", "--tasks", "/nonexistent.jsonl", "--port", "0"});
  EXPECT_EQ(missing.port(), 0);
  EXPECT_NE(missing.terminate(10.0), std::optional<int>(0));
}

TEST(EnvServerProcess, SigtermDrainsRequestsInFlightAndExitsZero) {
  if (!shared_sandbox().sandbox) GTEST_SKIP() << "no sandbox on this host: " << shared_sandbox().why_not;
  ServerProcess server(serve_args(0));
  ASSERT_NE(server.port(), 0);
  const std::string slow =
      "```python\nimport sys, time\ntime.sleep(0.3)\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```";
  std::vector<std::thread> threads;
  std::vector<RawResponse> responses(4);
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      responses[i] = call(server.port(), "POST", "/v1/feedback", json{{"task_id", "code-sum"}, {"response", slow}}.dump());
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto exit_status = server.terminate(60.0);
  for (auto& t : threads) t.join();
  EXPECT_EQ(exit_status, std::optional<int>(0));
  for (const auto& r : responses) {
    EXPECT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.json()["verdict"], "accepted") << r.body;
  }
}

TEST(EnvServerProcess, ClientRidesThroughARestart) {
  auto first = std::make_unique<ServerProcess>(serve_args(0));
  const std::uint16_t port = first->port();
  ASSERT_NE(port, 0);
  ClientConfig config;
  config.endpoints = {"http://127.0.0.1:" + std::to_string(port)};
  config.max_attempts = 40;
  config.backoff_initial_s = 0.02;
  config.backoff_max_s = 0.2;
  config.request_timeout_s = 30;
  FeedbackClient client(config);

  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failed{0};
  std::string first_failure;
  std::thread load([&] {
    int i = 0;
    while (!stop) {
      std::vector<FeedbackItem> items;
      for (int k = 0; k < 20; ++k, ++i) items.push_back({"math-product", std::nullopt, "\\boxed{" + std::to_string(i) + "}"});
      auto outcomes = client.feedback(items);
      for (std::size_t k = 0; k < outcomes.size(); ++k) {
        if (outcomes[k].ok && outcomes[k].result["extracted"] == items[k].response.substr(7, items[k].response.size() - 8)) {
          ++answered;
        } else {
          if (failed++ == 0) first_failure = outcomes[k].error + outcomes[k].result.dump();
        }
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(first->terminate(30.0), std::optional<int>(0));
  const int before_restart = answered;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the client sees refused connections
  ServerProcess second(serve_args(port));
  ASSERT_EQ(second.port(), port);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  load.join();
  EXPECT_EQ(failed, 0) << first_failure;
  EXPECT_GT(before_restart, 0);
  EXPECT_GT(answered, before_restart);
}

}  // namespace
}  // namespace distil::env
