#include "env_server/worker_pool.h"

#include <stdexcept>

namespace distil::env {

WorkerPool::WorkerPool(std::size_t threads, std::size_t queue_capacity) : capacity_(queue_capacity) {
  if (threads == 0) throw std::invalid_argument("worker pool needs at least one thread");
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() { shutdown(); }

bool WorkerPool::try_submit(std::vector<Job>& jobs) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() + jobs.size() > capacity_) return false;
    for (auto& job : jobs) queue_.push_back(std::move(job));
  }
  if (jobs.size() == 1) ready_.notify_one();
  else ready_.notify_all();
  return true;
}

void WorkerPool::shutdown() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

std::size_t WorkerPool::queue_depth() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

std::size_t WorkerPool::busy() const {
  std::lock_guard lock(mutex_);
  return busy_;
}

void WorkerPool::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
    }
    job();  // jobs catch their own exceptions; see Server
    std::lock_guard lock(mutex_);
    --busy_;
  }
}

}  // namespace distil::env
