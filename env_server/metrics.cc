#include "env_server/metrics.h"

#include <algorithm>
#include <sstream>

namespace distil::env {

std::string prometheus_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{route, status}];
}

void Metrics::observe_grading(const std::string& grader, const std::string& verdict, double seconds) {
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(kLatencyBucketsS.begin(), kLatencyBucketsS.end(), seconds) - kLatencyBucketsS.begin());
  std::lock_guard lock(mutex_);
  auto& h = gradings_[{grader, verdict}];
  if (bucket < h.buckets.size()) ++h.buckets[bucket];
  ++h.count;
  h.sum_s += seconds;
}

void Metrics::count_sandbox_runs(const std::string& verdict, std::uint64_t runs) {
  std::lock_guard lock(mutex_);
  sandbox_runs_[verdict] += runs;
}

void Metrics::count_rejected(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++rejected_[reason];
}

std::string Metrics::render(const GaugeSnapshot& gauges) const {
  std::ostringstream out;
  std::lock_guard lock(mutex_);
  out << "# HELP distil_http_requests_total HTTP requests answered, by route and status.\n"
      << "# TYPE distil_http_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out << "distil_http_requests_total{route=\"" << prometheus_label(key.first) << "\",status=\"" << key.second
        << "\"} " << n << "\n";

  out << "# HELP distil_grading_duration_seconds Time to grade one item, by grader and verdict.\n"
      << "# TYPE distil_grading_duration_seconds histogram\n";
  for (const auto& [key, h] : gradings_) {
    const std::string labels =
        "grader=\"" + prometheus_label(key.first) + "\",verdict=\"" + prometheus_label(key.second) + "\"";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kLatencyBucketsS.size(); ++i) {
      cumulative += h.buckets[i];
      out << "distil_grading_duration_seconds_bucket{" << labels << ",le=\"" << kLatencyBucketsS[i] << "\"} "
          << cumulative << "\n";
    }
    out << "distil_grading_duration_seconds_bucket{" << labels << ",le=\"+Inf\"} " << h.count << "\n"
        << "distil_grading_duration_seconds_sum{" << labels << "} " << h.sum_s << "\n"
        << "distil_grading_duration_seconds_count{" << labels << "} " << h.count << "\n";
  }

  out << "# HELP distil_sandbox_runs_total Sandboxed program runs made by graders, by sandbox verdict.\n"
      << "# TYPE distil_sandbox_runs_total counter\n";
  for (const auto& [verdict, n] : sandbox_runs_)
    out << "distil_sandbox_runs_total{verdict=\"" << prometheus_label(verdict) << "\"} " << n << "\n";

  out << "# HELP distil_rejected_total Requests or items refused before grading, by reason.\n"
      << "# TYPE distil_rejected_total counter\n";
  for (const auto& [reason, n] : rejected_)
    out << "distil_rejected_total{reason=\"" << prometheus_label(reason) << "\"} " << n << "\n";

  out << "# HELP distil_queue_depth Grading jobs waiting for a worker.\n"
      << "# TYPE distil_queue_depth gauge\n"
      << "distil_queue_depth " << gauges.queue_depth << "\n"
      << "# HELP distil_busy_workers Workers grading right now.\n"
      << "# TYPE distil_busy_workers gauge\n"
      << "distil_busy_workers " << gauges.busy_workers << "\n"
      << "# HELP distil_workers Size of the grading worker pool.\n"
      << "# TYPE distil_workers gauge\n"
      << "distil_workers " << gauges.workers << "\n"
      << "# HELP distil_open_connections Open client connections.\n"
      << "# TYPE distil_open_connections gauge\n"
      << "distil_open_connections " << gauges.open_connections << "\n";
  return out.str();
}

}  // namespace distil::env
