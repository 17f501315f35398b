// A fixed set of grading threads fed by a bounded queue. When the queue is full, or the new jobs
// would wait longer than the caller allows, submission fails immediately (the server answers 429
// with Retry-After) instead of letting the queue, and every client's latency, grow.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace distil::env {

class WorkerPool {
 public:
  using Job = std::function<void()>;

  WorkerPool(std::size_t threads, std::size_t queue_capacity);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  enum class Admission { admitted, queue_full, wait_too_long, stopping };

  // All of `jobs` are queued, or none (false: not enough room, or the pool is stopping).
  bool try_submit(std::vector<Job>& jobs) { return submit(jobs, 0, nullptr) == Admission::admitted; }
  // The same, also refusing (wait_too_long) when the first of `jobs` would likely wait more than
  // `max_wait_s` (0: no bound) before a worker starts it: the jobs queued or running ahead of it,
  // beyond one per worker less one, times the mean duration of recent jobs, over the workers. A
  // request's own size never refuses it (an idle pool admits any batch that fits the queue). The
  // estimate goes to `estimated_wait_s` (when not null) whatever the answer.
  Admission submit(std::vector<Job>& jobs, double max_wait_s, double* estimated_wait_s);

  // Stops taking jobs, finishes the queued ones, joins the threads. Idempotent.
  void shutdown();

  std::size_t queue_depth() const;
  std::size_t busy() const;
  std::size_t threads() const { return threads_.size(); }
  std::size_t capacity() const { return capacity_; }
  double mean_job_s() const;  // moving average over recent jobs (0 before the first one ends)

 private:
  void run();

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Job> queue_;
  std::size_t busy_ = 0;
  double mean_job_s_ = 0;  // exponential moving average of job durations
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace distil::env
