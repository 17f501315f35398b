// Server metrics in the Prometheus text exposition format (GET /metrics).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace distil::env {

struct GaugeSnapshot {
  std::size_t queue_depth = 0;     // grading jobs waiting for a worker
  std::size_t busy_workers = 0;
  std::size_t workers = 0;
  std::size_t open_connections = 0;
};

class Metrics {
 public:
  void count_request(const std::string& route, int status);
  void observe_grading(const std::string& grader, const std::string& verdict, double seconds);
  void count_sandbox_runs(const std::string& verdict, std::uint64_t runs);
  void count_rejected(const std::string& reason);  // queue_full, deadline_exceeded, ...

  std::string render(const GaugeSnapshot& gauges) const;

  static constexpr std::array<double, 16> kLatencyBucketsS = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                              0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                              5,      10,    30,     120};

 private:
  struct Histogram {
    std::array<std::uint64_t, kLatencyBucketsS.size()> buckets{};  // non-cumulative counts
    std::uint64_t count = 0;
    double sum_s = 0.0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, Histogram> gradings_;
  std::map<std::string, std::uint64_t> sandbox_runs_;
  std::map<std::string, std::uint64_t> rejected_;
};

// Escapes a label value for the text format (backslash, double quote, newline).
std::string prometheus_label(const std::string& value);

}  // namespace distil::env
