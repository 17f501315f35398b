// The real server (in this process, on a loopback port) with the real task loader, graders and
// sandbox, driven by raw HTTP for every route and error status, and by the real client.
#include <atomic>
#include <cstdio>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "env_server/client/feedback_client.h"
#include "env_server/server.h"
#include "tests/env_server/test_support.h"

namespace distil::env {
namespace {

using nlohmann::json;
using namespace distil::env::testing;

class EnvServer : public ::testing::Test {
 protected:
  static ServerConfig quiet_config() {
    ServerConfig c;
    c.host = "127.0.0.1";
    c.port = 0;
    c.io_threads = 2;
    c.workers = 2;
    c.access_log = nullptr;
    return c;
  }

  std::uint16_t start(ServerConfig config = quiet_config(), bool with_sandbox = true) {
    server_ = std::make_unique<Server>(config, TaskStore::from_files({tasks_file()}), graders::Registry::builtin(),
                                       with_sandbox ? shared_sandbox().sandbox.get() : nullptr);
    port_ = server_->start();
    return port_;
  }

  void require_sandbox() {
    if (!shared_sandbox().sandbox) GTEST_SKIP() << "no sandbox on this host: " << shared_sandbox().why_not;
  }

  RawResponse post(const std::string& target, const json& body, const std::vector<std::string>& headers = {}) {
    return call(port_, "POST", target, body.dump(), headers);
  }

  ClientConfig client_config() {
    ClientConfig c;
    c.endpoints = {"http://127.0.0.1:" + std::to_string(port_)};
    c.request_timeout_s = 60;
    return c;
  }

  std::unique_ptr<Server> server_;
  std::uint16_t port_ = 0;
};

// --- routes -------------------------------------------------------------------------------------

TEST_F(EnvServer, HealthzAnswersOk) {
  start();
  auto r = call(port_, "GET", "/healthz");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.json()["status"], "ok");
  EXPECT_FALSE(r.headers["X-Request-Id"].empty());
}

TEST_F(EnvServer, ReadyzReportsSelfTestAndIsolation) {
  require_sandbox();
  start();
  auto r = call(port_, "GET", "/readyz");
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  EXPECT_TRUE(j["ready"].get<bool>());
  EXPECT_TRUE(j["self_test"]["passed"].get<bool>());
  EXPECT_TRUE(j["isolation"].is_object());
  EXPECT_TRUE(j["isolation"].contains("seccomp"));
}

TEST_F(EnvServer, ReadyzIs503WithoutSandbox) {
  start(quiet_config(), /*with_sandbox=*/false);
  auto r = call(port_, "GET", "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_FALSE(r.json()["ready"].get<bool>());
  EXPECT_EQ(call(port_, "GET", "/healthz").status, 200);  // alive, just not ready
}

TEST_F(EnvServer, LimitsGradersAndTasks) {
  auto config = quiet_config();
  config.limits.max_batch_items = 17;
  start(config);
  auto limits = call(port_, "GET", "/v1/limits").json();
  EXPECT_EQ(limits["max_batch_items"], 17);
  EXPECT_EQ(limits["workers"], 2);

  auto graders = call(port_, "GET", "/v1/graders").json();
  std::set<std::string> names;
  for (const auto& g : graders["graders"]) names.insert(g["name"].get<std::string>());
  EXPECT_TRUE(names.count("science"));
  EXPECT_TRUE(names.count("math"));
  EXPECT_TRUE(names.count("code"));

  auto list = call(port_, "GET", "/v1/tasks").json();
  EXPECT_EQ(list["count"], 5);
  EXPECT_EQ(list["tasks"][0]["id"], "math-product");

  auto one = call(port_, "GET", "/v1/tasks/code-sum");
  ASSERT_EQ(one.status, 200);
  EXPECT_EQ(one.json()["tests"].size(), 3u);
  auto encoded = call(port_, "GET", "/v1/tasks/tasks%2Fwith%20space");
  ASSERT_EQ(encoded.status, 200) << encoded.body;
  EXPECT_EQ(encoded.json()["answer"], "4");
  auto missing = call(port_, "GET", "/v1/tasks/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.json()["error"]["code"], "unknown_task");
}

TEST_F(EnvServer, MathFeedbackRightAndWrong) {
  start();
  auto right = post("/v1/feedback", {{"task_id", "math-product"}, {"response", kMathRight}});
  ASSERT_EQ(right.status, 200) << right.body;
  auto j = right.json();
  EXPECT_EQ(j["task_id"], "math-product");
  EXPECT_EQ(j["verdict"], "accepted");
  EXPECT_TRUE(j["passed"].get<bool>());
  EXPECT_DOUBLE_EQ(j["reward"].get<double>(), 1.0);

  auto wrong = post("/v1/feedback", {{"task_id", "math-product"}, {"response", kMathWrong}});
  ASSERT_EQ(wrong.status, 200) << wrong.body;
  EXPECT_EQ(wrong.json()["verdict"], "wrong_answer");
  EXPECT_DOUBLE_EQ(wrong.json()["reward"].get<double>(), 0.0);
  // The reference answer is not revealed unless asked for.
  EXPECT_EQ(wrong.json()["feedback"].get<std::string>().find("42"), std::string::npos);
}

TEST_F(EnvServer, InlineTaskAndOptions) {
  start();
  json task = {{"id", "inline-1"}, {"domain", "math"}, {"prompt", "1+1?"}, {"answer", "2"}};
  auto r = post("/v1/feedback", {{"task", task}, {"response", "\\boxed{3}"}, {"options", {{"reveal_answer", true}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["task_id"], "inline-1");
  EXPECT_EQ(r.json()["verdict"], "wrong_answer");
}

TEST_F(EnvServer, ScienceFeedback) {
  start();
  auto r = post("/v1/feedback", {{"task_id", "science-water"}, {"response", "The answer is (A)."}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["verdict"], "accepted");
}

TEST_F(EnvServer, CodeFeedbackRunsInTheSandbox) {
  require_sandbox();
  start();
  auto right = post("/v1/feedback", {{"task_id", "code-sum"}, {"response", kCodeRight}});
  ASSERT_EQ(right.status, 200) << right.body;
  EXPECT_EQ(right.json()["verdict"], "accepted") << right.body;
  auto wrong = post("/v1/feedback", {{"task_id", "code-sum"}, {"response", kCodeWrong}});
  ASSERT_EQ(wrong.status, 200) << wrong.body;
  EXPECT_EQ(wrong.json()["verdict"], "wrong_answer") << wrong.body;
  EXPECT_NE(wrong.json()["feedback"].get<std::string>().find("Wrong Answer"), std::string::npos) << wrong.body;
  // Three runs for the right program, one (stopped at the first failure) for the wrong one.
  auto metrics = call(port_, "GET", "/metrics").body;
  EXPECT_NE(metrics.find("distil_sandbox_runs_total{verdict=\"accepted\"} 3"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("distil_sandbox_runs_total{verdict=\"wrong_answer\"} 1"), std::string::npos) << metrics;
}

TEST_F(EnvServer, BatchKeepsOrderAndIsolatesBadItems) {
  start();
  json items = json::array({
      {{"task_id", "math-product"}, {"response", kMathRight}},
      {{"task_id", "no-such-task"}, {"response", "x"}},
      {{"task_id", "math-product"}, {"response", 7}},
      {{"task_id", "math-half"}, {"response", "\\boxed{0.5}"}},
      {{"task_id", "science-water"}, {"response", "(B)"}},
  });
  auto r = post("/v1/feedback:batch", {{"items", items}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto results = r.json()["results"];
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[0]["verdict"], "accepted");
  EXPECT_EQ(results[1]["error"]["code"], "unknown_task");
  EXPECT_EQ(results[1]["error"]["field"], "items[1].task_id");
  EXPECT_EQ(results[1]["error"]["status"], 404);
  EXPECT_EQ(results[2]["error"]["field"], "items[2].response");
  EXPECT_EQ(results[3]["task_id"], "math-half");
  EXPECT_EQ(results[4]["verdict"], "wrong_answer");
}

TEST_F(EnvServer, MetricsCountRequestsAndGradings) {
  start();
  post("/v1/feedback", {{"task_id", "math-product"}, {"response", kMathRight}});
  call(port_, "GET", "/nope");
  auto r = call(port_, "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.headers["Content-Type"].find("text/plain"), std::string::npos);
  EXPECT_NE(r.body.find("distil_http_requests_total{route=\"/v1/feedback\",status=\"200\"} 1"), std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("distil_http_requests_total{route=\"other\",status=\"404\"} 1"), std::string::npos);
  EXPECT_NE(r.body.find("distil_grading_duration_seconds_count{grader=\"math\",verdict=\"accepted\"} 1"),
            std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("distil_queue_depth 0"), std::string::npos);
}

// --- error statuses -----------------------------------------------------------------------------

TEST_F(EnvServer, MalformedJsonIs400) {
  start();
  auto r = call(port_, "POST", "/v1/feedback", "{\"task_id\": \"math-product\", ");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["code"], "malformed_json");
  EXPECT_EQ(call(port_, "POST", "/v1/feedback", "").status, 400);
}

TEST_F(EnvServer, InvalidUtf8Is400) {
  start();
  auto r = call(port_, "POST", "/v1/feedback", "{\"task_id\": \"math-product\", \"response\": \"\xff\xfe\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["code"], "invalid_utf8");
}

TEST_F(EnvServer, WrongTypesAndUnknownFieldsAre422NamingTheField) {
  start();
  struct Case {
    json body;
    std::string field;
  };
  std::vector<Case> cases = {
      {{{"task_id", 5}, {"response", "x"}}, "task_id"},
      {{{"task_id", "math-product"}, {"response", json::array()}}, "response"},
      {{{"task_id", "math-product"}}, "response"},
      {{{"response", "x"}}, "task_id"},
      {{{"task_id", "math-product"}, {"response", "x"}, {"colour", "red"}}, "colour"},
      {{{"task_id", "math-product"}, {"response", "x"}, {"options", {{"no_such_option", 1}}}}, "options.no_such_option"},
      {{{"task_id", "math-product"}, {"response", "x"}, {"options", 3}}, "options"},
      {{{"task", {{"id", "t"}, {"domain", "math"}, {"prompt", "p"}}}, {"response", "x"}}, "task.answer"},
      {json::array({1, 2}), ""},
  };
  for (const auto& c : cases) {
    auto r = post("/v1/feedback", c.body);
    EXPECT_EQ(r.status, 422) << c.body.dump() << " -> " << r.body;
    EXPECT_EQ(r.json()["error"].value("field", ""), c.field) << c.body.dump() << " -> " << r.body;
  }
}

TEST_F(EnvServer, UnknownTaskIs404AndUnknownGraderIs422) {
  start();
  auto r = post("/v1/feedback", {{"task_id", "nope"}, {"response", "x"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json()["error"]["field"], "task_id");
  json task = {{"id", "t"}, {"domain", "math"}, {"prompt", "p"}, {"answer", "1"}, {"grader", "no-such-grader"}};
  auto g = post("/v1/feedback", {{"task", task}, {"response", "x"}});
  EXPECT_EQ(g.status, 422) << g.body;
  EXPECT_EQ(g.json()["error"]["code"], "unknown_grader") << g.body;
  EXPECT_EQ(g.json()["error"]["field"], "task.grader") << g.body;
}

TEST_F(EnvServer, BatchTooLargeIs422NamingTheLimit) {
  auto config = quiet_config();
  config.limits.max_batch_items = 3;
  start(config);
  json items = json::array();
  for (int i = 0; i < 4; ++i) items.push_back({{"task_id", "math-product"}, {"response", kMathRight}});
  auto r = post("/v1/feedback:batch", {{"items", items}});
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.json()["error"]["code"], "batch_too_large");
  EXPECT_EQ(r.json()["error"]["limit"], 3);
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("max_batch_items"), std::string::npos);
  auto not_array = post("/v1/feedback:batch", {{"items", "x"}});
  EXPECT_EQ(not_array.status, 422);
  EXPECT_EQ(not_array.json()["error"]["field"], "items");
}

TEST_F(EnvServer, BodyTooLargeIs413) {
  auto config = quiet_config();
  config.limits.max_body_bytes = 1000;
  start(config);
  auto r = post("/v1/feedback", {{"task_id", "math-product"}, {"response", std::string(5000, 'a')}});
  EXPECT_EQ(r.status, 413) << r.error;
  EXPECT_EQ(r.json()["error"]["code"], "body_too_large");
  // A body far beyond the limit is refused too, and the server stays healthy.
  auto big = post("/v1/feedback", {{"task_id", "math-product"}, {"response", std::string(4 << 20, 'a')}});
  EXPECT_EQ(big.status, 413) << big.error;
  EXPECT_EQ(call(port_, "GET", "/healthz").status, 200);
}

TEST_F(EnvServer, DeepJsonAndLongStringsAre422) {
  auto config = quiet_config();
  config.limits.max_json_depth = 8;
  config.limits.max_string_bytes = 100;
  start(config);
  std::string deep = "{\"task_id\": \"math-product\", \"response\": \"x\", \"options\": " + std::string(50, '[') +
                     std::string(50, ']') + "}";
  auto r = call(port_, "POST", "/v1/feedback", deep);
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.json()["error"]["code"], "too_deep");
  // Very deep input (far past any recursion limit) is refused just the same.
  auto very_deep = call(port_, "POST", "/v1/feedback", std::string(1 << 20, '['));
  EXPECT_EQ(very_deep.status, 422);

  auto long_string = post("/v1/feedback", {{"task_id", "math-product"}, {"response", std::string(101, 'a')}});
  EXPECT_EQ(long_string.status, 422);
  EXPECT_EQ(long_string.json()["error"]["code"], "string_too_long");
  EXPECT_EQ(long_string.json()["error"]["field"], "response");
}

TEST_F(EnvServer, HugeHeadersAre431) {
  auto config = quiet_config();
  config.limits.max_header_bytes = 2048;
  start(config);
  auto r = call(port_, "GET", "/healthz", "", {"X-Padding: " + std::string(4096, 'p')});
  EXPECT_EQ(r.status, 431) << r.error;
  EXPECT_EQ(call(port_, "GET", "/healthz").status, 200);
}

TEST_F(EnvServer, UnknownRouteIs404AndWrongMethodIs405) {
  start();
  auto r = call(port_, "GET", "/v2/everything");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json()["error"]["code"], "not_found");
  auto m = call(port_, "GET", "/v1/feedback");
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.headers["Allow"], "POST");
  EXPECT_EQ(call(port_, "DELETE", "/v1/tasks").status, 405);
}

TEST_F(EnvServer, GarbageRequestLineIs400) {
  start();
  RawConnection c(port_);
  c.send("HELLO THERE\r\n\r\n");
  auto r = c.read();
  EXPECT_EQ(r.status, 400) << r.error;
}

TEST_F(EnvServer, BearerAuthIs401WithoutTheToken) {
  auto config = quiet_config();
  config.auth_token = "s3cret-token";
  start(config);
  auto none = call(port_, "GET", "/v1/tasks");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers["WWW-Authenticate"], "Bearer");
  EXPECT_EQ(call(port_, "GET", "/v1/tasks", "", {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(call(port_, "GET", "/v1/tasks", "", {"Authorization: Bearer s3cret-token"}).status, 200);
  EXPECT_EQ(call(port_, "GET", "/healthz").status, 200);  // probes stay open

  auto client_config_ = client_config();
  client_config_.auth_token = "s3cret-token";
  FeedbackClient client(client_config_);
  auto outcome = client.feedback_one({"math-product", std::nullopt, kMathRight});
  EXPECT_TRUE(outcome.ok) << outcome.error;
  client_config_.auth_token = "wrong";
  FeedbackClient bad(client_config_);
  auto refused = bad.feedback_one({"math-product", std::nullopt, kMathRight});
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("401"), std::string::npos) << refused.error;
}

TEST_F(EnvServer, FullQueueIs429WithRetryAfter) {
  auto config = quiet_config();
  config.workers = 1;
  config.queue_capacity = 2;
  start(config);
  json items = json::array();
  for (int i = 0; i < 3; ++i) items.push_back({{"task_id", "math-product"}, {"response", kMathRight}});
  auto r = post("/v1/feedback:batch", {{"items", items}});
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["Retry-After"], "1");
  EXPECT_EQ(r.json()["error"]["code"], "overloaded");
}

// The wait bound: with one worker busy and the mean grading time known, a request that would
// have to wait longer than max_queue_wait_s is refused at once (429, Retry-After), long before
// it could have been graded. (No wall-clock bound is asserted: the refusal follows from the
// state, one job running, whatever the machine's speed.)
TEST_F(EnvServer, ExpectedQueueWaitBeyondTheBoundIs429WithRetryAfter) {
  require_sandbox();
  auto config = quiet_config();
  config.workers = 1;
  config.max_queue_wait_s = 1e-6;  // any grading that ran in the sandbox took longer
  start(config);
  auto limits = call(port_, "GET", "/v1/limits", "", {});
  EXPECT_EQ(limits.json()["max_queue_wait_s"], 1e-6);
  // With the worker free nothing waits, whatever the bound: graded (and the mean is now known).
  auto first = post("/v1/feedback", {{"task_id", "code-sum"}, {"response", kCodeRight}});
  ASSERT_EQ(first.status, 200) << first.body;
  const std::string slow = "```python\nimport time\ntime.sleep(1)\nprint(0)\n```";
  std::thread busy([&] { call(port_, "POST", "/v1/feedback", json({{"task_id", "code-sum"}, {"response", slow}}).dump(), {}); });
  bool running = false;
  for (int i = 0; i < 400 && !running; ++i) {
    running = call(port_, "GET", "/metrics", "", {}).body.find("distil_busy_workers 1") != std::string::npos;
    if (!running) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(running) << "the slow grading never started";
  auto refused = post("/v1/feedback", {{"task_id", "math-product"}, {"response", kMathRight}});
  busy.join();
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(refused.json()["error"]["code"], "overloaded");
  EXPECT_NE(refused.json()["error"]["message"].get<std::string>().find("max_queue_wait_s"), std::string::npos);
  ASSERT_TRUE(refused.headers.count("Retry-After"));
  EXPECT_GE(std::stoi(refused.headers["Retry-After"]), 1);
  EXPECT_NE(call(port_, "GET", "/metrics", "", {}).body.find("distil_rejected_total{reason=\"queue_wait\"} 1"),
            std::string::npos);
  // Once the worker is free again, the same request is graded.
  for (int i = 0; i < 400 && call(port_, "GET", "/metrics", "", {}).body.find("distil_busy_workers 0") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(post("/v1/feedback", {{"task_id", "math-product"}, {"response", kMathRight}}).status, 200);
}

TEST_F(EnvServer, MissedDeadlineIs503) {
  auto config = quiet_config();
  config.request_deadline_s = 1e-9;
  start(config);
  auto r = post("/v1/feedback", {{"task_id", "math-product"}, {"response", kMathRight}});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.json()["error"]["code"], "deadline_exceeded");
  json items = json::array({{{"task_id", "math-product"}, {"response", kMathRight}}});
  auto b = post("/v1/feedback:batch", {{"items", items}});
  ASSERT_EQ(b.status, 200);
  EXPECT_EQ(b.json()["results"][0]["error"]["code"], "deadline_exceeded");
}

TEST_F(EnvServer, DeadlineAnswersWhileGradingIsStillRunning) {
  require_sandbox();
  auto config = quiet_config();
  config.request_deadline_s = 0.3;
  start(config);
  const std::string slow = "```python\nimport time\ntime.sleep(1.5)\nprint(0)\n```";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = post("/v1/feedback", {{"task_id", "code-sum"}, {"response", slow}});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "deadline_exceeded");
  EXPECT_LT(took, 1.4);  // answered at the deadline, not when the program finished
}

// --- connections --------------------------------------------------------------------------------

TEST_F(EnvServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  start();
  RawConnection c(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send(http_request("GET", "/healthz", "", {}, /*keep_alive=*/true)));
    auto r = c.read();
    ASSERT_EQ(r.status, 200) << r.error;
    EXPECT_TRUE(r.keep_alive);
  }
  // Two pipelined requests in one write are both answered, in order.
  c.send(http_request("GET", "/v1/tasks/math-half", "", {}, true) + http_request("GET", "/v1/tasks/code-sum", "", {}, true));
  EXPECT_EQ(c.read().json()["id"], "math-half");
  EXPECT_EQ(c.read().json()["id"], "code-sum");
}

TEST_F(EnvServer, ExpectContinueGetsTheInterimAnswerBeforeTheBody) {
  start();
  const std::string body = json{{"task_id", "math-product"}, {"response", kMathRight}}.dump();
  RawConnection c(port_);
  ASSERT_TRUE(c.send("POST /v1/feedback HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n"));
  auto interim = c.read(5.0);
  ASSERT_EQ(interim.status, 100) << interim.error;
  ASSERT_TRUE(c.send(body));
  auto r = c.read();
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.json()["verdict"], "accepted");
}

TEST_F(EnvServer, SlowClientIsDisconnected) {
  auto config = quiet_config();
  config.read_timeout_s = 0.3;
  start(config);
  RawConnection c(port_);
  ASSERT_TRUE(c.send("POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"task"));
  EXPECT_TRUE(c.closed_by_peer(5.0));
}

TEST_F(EnvServer, IdleConnectionIsClosed) {
  auto config = quiet_config();
  config.idle_timeout_s = 0.3;
  start(config);
  RawConnection c(port_);
  ASSERT_TRUE(c.connected());
  EXPECT_TRUE(c.closed_by_peer(5.0));
}

// What the server wrote to its access log, read once it has stopped (which flushes the log).
std::string stop_and_read_log(std::unique_ptr<Server>& server, std::FILE* log) {
  server.reset();
  std::rewind(log);
  std::string text;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, log)) > 0;) text.append(buf, n);
  std::fclose(log);
  return text;
}

TEST_F(EnvServer, ReadTimeoutMidRequestGetsOneTransportErrorLogLine) {
  auto config = quiet_config();
  config.read_timeout_s = 0.3;
  config.access_log = std::tmpfile();
  ASSERT_NE(config.access_log, nullptr);
  start(config);
  {
    RawConnection c(port_);
    ASSERT_TRUE(c.send("POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"task"));
    EXPECT_TRUE(c.closed_by_peer(5.0));
  }
  const std::string log = stop_and_read_log(server_, config.access_log);
  std::vector<json> events;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (auto j = json::parse(line); j.contains("event")) events.push_back(j);
  ASSERT_EQ(events.size(), 1u) << log;
  EXPECT_EQ(events[0]["event"], "transport_error");
  EXPECT_EQ(events[0]["during"], "read");
  EXPECT_FALSE(events[0]["error"].get<std::string>().empty());
  EXPECT_FALSE(events[0]["remote"].get<std::string>().empty());
}

TEST_F(EnvServer, NormalConnectionEndsLogNoTransportError) {
  auto config = quiet_config();
  config.idle_timeout_s = 0.3;
  config.access_log = std::tmpfile();
  ASSERT_NE(config.access_log, nullptr);
  start(config);
  {
    RawConnection idle(port_);  // closed by the idle timeout
    ASSERT_TRUE(idle.connected());
    EXPECT_TRUE(idle.closed_by_peer(5.0));
  }
  {
    RawConnection c(port_);  // one request, then the client closes
    ASSERT_TRUE(c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(c.read().status, 200);
  }
  const std::string log = stop_and_read_log(server_, config.access_log);
  EXPECT_EQ(log.find("transport_error"), std::string::npos) << log;
  EXPECT_NE(log.find("\"route\":\"/healthz\""), std::string::npos) << log;
}

// --- concurrency and shutdown --------------------------------------------------------------------

TEST_F(EnvServer, HundredsOfSimultaneousRequestsEachGetTheirOwnAnswer) {
  start();
  constexpr int kRequests = 300;
  std::vector<std::thread> threads;
  std::vector<RawResponse> responses(kRequests);
  std::atomic<int> go{0};
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      RawConnection c(port_);
      while (!go) std::this_thread::yield();
      json body = {{"task_id", "math-product"}, {"response", "\\boxed{" + std::to_string(i) + "}"}};
      c.send(http_request("POST", "/v1/feedback", body.dump()));
      responses[i] = c.read();
    });
  }
  go = 1;
  for (auto& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(responses[i].status, 200) << i << ": " << responses[i].error << responses[i].body;
    auto j = responses[i].json();
    EXPECT_EQ(j["extracted"], std::to_string(i)) << j.dump();
    EXPECT_EQ(j["passed"].get<bool>(), i == 42);
  }
}

TEST_F(EnvServer, ClientGradesThousandsOfItemsExactlyOnceInOrder) {
  auto config = quiet_config();
  config.limits.max_batch_items = 50;
  start(config);
  std::vector<FeedbackItem> items;
  for (int i = 0; i < 2000; ++i)
    items.push_back({i % 2 ? "math-product" : "math-half", std::nullopt, "\\boxed{" + std::to_string(i) + "}"});
  items[777].task_id = "does-not-exist";
  FeedbackClient client(client_config());
  auto outcomes = client.feedback(items);
  ASSERT_EQ(outcomes.size(), items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i == 777) {
      EXPECT_FALSE(outcomes[i].ok);
      EXPECT_NE(outcomes[i].error.find("unknown_task"), std::string::npos) << outcomes[i].error;
      continue;
    }
    ASSERT_TRUE(outcomes[i].ok) << i << ": " << outcomes[i].error;
    EXPECT_EQ(outcomes[i].result["extracted"], std::to_string(i));
    EXPECT_EQ(outcomes[i].result["task_id"], items[i].task_id);
  }
  // The server's counters agree: every item was graded once.
  auto metrics = call(port_, "GET", "/metrics").body;
  EXPECT_NE(metrics.find("distil_http_requests_total{route=\"/v1/feedback:batch\",status=\"200\"} 40"),
            std::string::npos)
      << metrics;
}

TEST_F(EnvServer, ClientSplitsBatchesToTheServerLimit) {
  auto config = quiet_config();
  config.limits.max_batch_items = 7;
  start(config);
  std::vector<FeedbackItem> items(30, FeedbackItem{"math-product", std::nullopt, kMathRight});
  auto cfg = client_config();
  cfg.max_batch_items = 20;  // wrong on purpose: the 422 tells the client the real limit
  FeedbackClient client(cfg);
  auto outcomes = client.feedback(items);
  for (const auto& o : outcomes) EXPECT_TRUE(o.ok) << o.error;
}

TEST_F(EnvServer, ClientRetriesThrough429) {
  auto config = quiet_config();
  config.workers = 1;
  config.queue_capacity = 8;
  config.retry_after_s = 0.05;
  config.limits.max_batch_items = 8;
  start(config);
  std::vector<FeedbackItem> items(400, FeedbackItem{"math-product", std::nullopt, kMathRight});
  auto cfg = client_config();
  cfg.max_concurrent_requests = 16;
  cfg.max_attempts = 200;
  cfg.backoff_initial_s = 0.001;
  cfg.backoff_max_s = 0.01;
  FeedbackClient client(cfg);
  auto outcomes = client.feedback(items);
  for (const auto& o : outcomes) ASSERT_TRUE(o.ok) << o.error;
}

TEST_F(EnvServer, ClientFailsOverFromADeadEndpoint) {
  start();
  // A port that was just free: nothing listens there.
  std::uint16_t dead_port;
  {
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::acceptor a(ioc, {boost::asio::ip::make_address("127.0.0.1"), 0});
    dead_port = a.local_endpoint().port();
  }
  auto cfg = client_config();
  cfg.endpoints = {"http://127.0.0.1:" + std::to_string(dead_port), "http://127.0.0.1:" + std::to_string(port_)};
  for (auto policy : {EndpointPolicy::round_robin, EndpointPolicy::least_loaded}) {
    cfg.policy = policy;
    FeedbackClient client(cfg);
    std::vector<FeedbackItem> items(100, FeedbackItem{"math-product", std::nullopt, kMathRight});
    for (const auto& o : client.feedback(items)) EXPECT_TRUE(o.ok) << o.error;
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(client.feedback_one(items[0]).ok);
  }
  cfg.endpoints = {"http://127.0.0.1:" + std::to_string(dead_port)};
  cfg.max_attempts = 2;
  FeedbackClient dead(cfg);
  auto outcomes = dead.feedback({FeedbackItem{"math-product", std::nullopt, kMathRight}});
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_FALSE(outcomes[0].ok);
  EXPECT_NE(outcomes[0].error.find("gave up after 2 attempts"), std::string::npos) << outcomes[0].error;
  EXPECT_THROW(dead.get_json("/v1/tasks"), std::runtime_error);
}

TEST_F(EnvServer, ClientRejectsBadEndpoints) {
  for (const std::string bad : {"https://x:1", "http://x:99999", "http://:80", "http://x:1/path", "ftp://x"}) {
    ClientConfig c;
    c.endpoints = {bad};
    EXPECT_THROW(FeedbackClient{c}, std::invalid_argument) << bad;
  }
  ClientConfig none;
  EXPECT_THROW(FeedbackClient{none}, std::invalid_argument);
}

TEST_F(EnvServer, GracefulStopAnswersRequestsInFlight) {
  require_sandbox();
  start();
  const std::string slow = "```python\nimport sys, time\ntime.sleep(0.4)\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```";
  std::vector<std::thread> threads;
  std::vector<RawResponse> responses(4);
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] { responses[i] = post("/v1/feedback", {{"task_id", "code-sum"}, {"response", slow}}); });
  RawConnection idle(port_);  // an idle keep-alive connection must not hold the drain up
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server_->request_stop();
  EXPECT_TRUE(server_->wait_stopped(30.0));
  for (auto& t : threads) t.join();
  for (const auto& r : responses) {
    EXPECT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(r.json()["verdict"], "accepted") << r.body;
  }
  EXPECT_FALSE(RawConnection(port_).connected());  // no longer accepting
}

}  // namespace
}  // namespace distil::env
