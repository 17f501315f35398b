// A fixed set of grading threads fed by a bounded queue. When the queue is full, submission
// fails immediately (the server answers 429) instead of letting the queue grow without limit.
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

  // All of `jobs` are queued, or none (false: not enough room, or the pool is stopping).
  bool try_submit(std::vector<Job>& jobs);

  // Stops taking jobs, finishes the queued ones, joins the threads. Idempotent.
  void shutdown();

  std::size_t queue_depth() const;
  std::size_t busy() const;
  std::size_t threads() const { return threads_.size(); }
  std::size_t capacity() const { return capacity_; }

 private:
  void run();

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Job> queue_;
  std::size_t busy_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace distil::env
