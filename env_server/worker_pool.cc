#include "env_server/worker_pool.h"

#include <chrono>
#include <stdexcept>

namespace distil::env {

WorkerPool::WorkerPool(std::size_t threads, std::size_t queue_capacity) : capacity_(queue_capacity) {
  if (threads == 0) throw std::invalid_argument("worker pool needs at least one thread");
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() { shutdown(); }

WorkerPool::Admission WorkerPool::submit(std::vector<Job>& jobs, double max_wait_s, double* estimated_wait_s) {
  {
    std::lock_guard lock(mutex_);
    // The bound is on the wait before the request's *first* job starts: the work ahead of it.
    // Its own size is not queueing delay, and counting it made a large batch on an idle server
    // wait "too long" forever on a machine whose sandbox runs are slow (no retry could succeed).
    // One job ahead ends about every mean / workers seconds; running jobs are counted whole, so
    // this errs towards refusing.
    const std::size_t ahead = queue_.size() + busy_;
    const std::size_t workers = threads_.size();
    const double wait =
        ahead >= workers ? static_cast<double>(ahead - workers + 1) * mean_job_s_ / static_cast<double>(workers) : 0.0;
    if (estimated_wait_s) *estimated_wait_s = wait;
    if (stopping_) return Admission::stopping;
    if (queue_.size() + jobs.size() > capacity_) return Admission::queue_full;
    if (max_wait_s > 0 && wait > max_wait_s) return Admission::wait_too_long;
    for (auto& job : jobs) queue_.push_back(std::move(job));
  }
  if (jobs.size() == 1) ready_.notify_one();
  else ready_.notify_all();
  return Admission::admitted;
}

double WorkerPool::mean_job_s() const {
  std::lock_guard lock(mutex_);
  return mean_job_s_;
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
    const auto started = std::chrono::steady_clock::now();
    job();  // jobs catch their own exceptions; see Server
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::lock_guard lock(mutex_);
    --busy_;
    // Weight 1/8: follows a change of workload within a few dozen jobs, smooths single outliers.
    mean_job_s_ = mean_job_s_ == 0 ? took : mean_job_s_ + (took - mean_job_s_) / 8;
  }
}

}  // namespace distil::env
