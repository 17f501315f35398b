// Unit tests of the request path below HTTP: JSON limits, item validation, the worker pool, and
// the Prometheus rendering.
#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "env_server/feedback_request.h"
#include "env_server/json_input.h"
#include "env_server/metrics.h"
#include "env_server/worker_pool.h"
#include "tests/env_server/test_support.h"

namespace distil::env {
namespace {

using nlohmann::json;

ApiError parse_error(const std::string& body, const RequestLimits& limits = {}) {
  try {
    parse_json_body(body, limits);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for " << body.substr(0, 80);
  return ApiError(0, "", "", "");
}

TEST(EnvJsonInput, AcceptsOrdinaryJson) {
  auto j = parse_json_body(R"({"a": [1, "x", {"b": null}]})", {});
  EXPECT_EQ(j["a"][1], "x");
}

TEST(EnvJsonInput, RejectsWithTheRightStatusAndField) {
  EXPECT_EQ(parse_error("").code(), "malformed_json");
  EXPECT_EQ(parse_error("{").status(), 400);
  EXPECT_EQ(parse_error("[1e999999]").code(), "malformed_json");  // number overflow (fuzzer find)
  EXPECT_EQ(parse_error("{\"a\": \"\xc3\x28\"}").code(), "invalid_utf8");
  EXPECT_EQ(parse_error("\"\xed\xa0\x80\"").code(), "invalid_utf8");  // a UTF-16 surrogate in UTF-8
  RequestLimits limits;
  limits.max_json_depth = 4;
  EXPECT_EQ(parse_error("[[[[[1]]]]]", limits).code(), "too_deep");
  EXPECT_NO_THROW(parse_json_body("[[[[1]]]]", limits));
  limits.max_string_bytes = 10;
  auto e = parse_error(R"({"items": [{"response": "abcdefghijk"}]})", limits);
  EXPECT_EQ(e.code(), "string_too_long");
  EXPECT_EQ(e.field(), "items[0].response");
  EXPECT_EQ(parse_error(R"({"abcdefghijk": 1})", limits).code(), "string_too_long");
}

TEST(EnvJsonInput, MillionLevelNestingDoesNotOverflowTheStack) {
  const std::string deep(1 << 20, '[');
  EXPECT_EQ(parse_error(deep).code(), "too_deep");
  const std::string deep_objects = [] {
    std::string s;
    for (int i = 0; i < 200000; ++i) s += "{\"a\":";
    return s;
  }();
  EXPECT_EQ(parse_error(deep_objects).code(), "too_deep");
}

class EnvRequestValidation : public ::testing::Test {
 protected:
  EnvRequestValidation() : store_(TaskStore::from_files({testing::tasks_file()})) {}
  TaskStore store_;
  const graders::Registry& registry_ = graders::Registry::builtin();
};

TEST_F(EnvRequestValidation, ResolvesTaskAndGrader) {
  auto job = validate_feedback_item({{"task_id", "math-product"}, {"response", "x"}}, "", store_, registry_, {});
  EXPECT_EQ(job.task->id, "math-product");
  EXPECT_EQ(job.grader->name(), "math");
  auto with_options = validate_feedback_item(
      {{"task_id", "code-sum"}, {"response", "x"}, {"options", {{"run_all_tests", true}}}}, "", store_, registry_, {});
  EXPECT_TRUE(with_options.options.run_all_tests);
}

TEST_F(EnvRequestValidation, BatchGivesEachBadItemItsOwnError) {
  json body = {{"items", json::array({{{"task_id", "math-product"}, {"response", "x"}}, 5,
                                      {{"task_id", "math-product"}, {"response", "x"}, {"task", json::object()}}})}};
  auto out = validate_feedback_batch(body, {}, store_, registry_, {});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<GradeJob>(out[0]));
  EXPECT_EQ(std::get<ApiError>(out[1]).field(), "items[1]");
  EXPECT_EQ(std::get<ApiError>(out[2]).field(), "items[2].task_id");
  EXPECT_THROW(validate_feedback_batch({{"items", json::array()}, {"x", 1}}, {}, store_, registry_, {}), ApiError);
}

TEST(EnvWorkerPool, RunsEveryJobAndRefusesWhenFull) {
  std::atomic<int> ran{0};
  std::atomic<bool> release{false};
  {
    WorkerPool pool(1, 2);
    std::vector<WorkerPool::Job> blocker{[&] {
      while (!release) std::this_thread::yield();
      ++ran;
    }};
    ASSERT_TRUE(pool.try_submit(blocker));
    while (pool.busy() == 0) std::this_thread::yield();
    std::vector<WorkerPool::Job> two{[&] { ++ran; }, [&] { ++ran; }};
    EXPECT_TRUE(pool.try_submit(two));
    std::vector<WorkerPool::Job> one_more{[&] { ++ran; }};
    EXPECT_FALSE(pool.try_submit(one_more));  // capacity 2, all or nothing
    EXPECT_EQ(pool.queue_depth(), 2u);
    release = true;
  }  // the destructor finishes what was queued
  EXPECT_EQ(ran, 3);
}

// The wait bound judges the work ahead of a request, not the request's own size: on an idle pool
// whose jobs are slow a large batch is admitted at once (it used to be refused forever, however
// often the client retried); with a job running, a new one must wait and is refused.
TEST(EnvWorkerPool, WaitBoundCountsOnlyTheWorkAhead) {
  std::atomic<bool> release{false};
  WorkerPool pool(1, 1000);
  std::vector<WorkerPool::Job> slow{[] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }};
  ASSERT_TRUE(pool.try_submit(slow));
  while (pool.busy() != 0 || pool.queue_depth() != 0 || pool.mean_job_s() == 0) std::this_thread::yield();
  const double mean = pool.mean_job_s();
  ASSERT_GT(mean, 0.0);
  std::vector<WorkerPool::Job> batch(500, [] {});
  double wait = -1;
  EXPECT_EQ(pool.submit(batch, mean / 2, &wait), WorkerPool::Admission::admitted);  // 500 jobs would take 250x the bound
  EXPECT_EQ(wait, 0.0);
  while (pool.busy() != 0 || pool.queue_depth() != 0) std::this_thread::yield();
  std::vector<WorkerPool::Job> blocker{[&] {
    while (!release) std::this_thread::yield();
  }};
  ASSERT_TRUE(pool.try_submit(blocker));
  while (pool.busy() == 0) std::this_thread::yield();
  std::vector<WorkerPool::Job> one{[] {}};
  EXPECT_EQ(pool.submit(one, pool.mean_job_s() / 2, &wait), WorkerPool::Admission::wait_too_long);
  EXPECT_GT(wait, 0.0);
  release = true;
}

TEST(EnvMetrics, RendersCumulativeHistogramsAndEscapesLabels) {
  Metrics m;
  m.observe_grading("math", "accepted", 0.0007);
  m.observe_grading("math", "accepted", 0.003);
  m.observe_grading("we\"ird", "x", 1000);
  m.count_request("/v1/feedback", 200);
  m.count_sandbox_runs("ok", 3);
  const std::string text = m.render({});
  EXPECT_NE(text.find("distil_grading_duration_seconds_bucket{grader=\"math\",verdict=\"accepted\",le=\"0.0005\"} 0"),
            std::string::npos);
  EXPECT_NE(text.find("distil_grading_duration_seconds_bucket{grader=\"math\",verdict=\"accepted\",le=\"0.001\"} 1"),
            std::string::npos);
  EXPECT_NE(text.find("distil_grading_duration_seconds_bucket{grader=\"math\",verdict=\"accepted\",le=\"0.005\"} 2"),
            std::string::npos);
  EXPECT_NE(text.find("grader=\"we\\\"ird\",verdict=\"x\",le=\"+Inf\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("distil_sandbox_runs_total{verdict=\"ok\"} 3"), std::string::npos);
}

}  // namespace
}  // namespace distil::env
