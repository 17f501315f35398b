// Evaluation metrics (DESIGN.md "Evaluation metrics"), the per-step metrics JSONL and its SVG plots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::trainer {

// Unbiased pass@k = 1 - C(n-c, k) / C(n, k), for k <= n (throws std::invalid_argument otherwise).
double pass_at_k(int64_t n, int64_t c, int64_t k);

struct GradedSample {
  bool graded = false;   // false: feedback failed; excluded from every metric and counted apart
  bool passed = false;
  double reward = 0.0;
  std::string extracted;  // the server's extracted answer (maj@k votes on it)
  double test_fraction = 0.0;  // code: fraction of tests passed (score); others: reward
};

struct PromptSamples {
  std::string task_id;
  std::string domain;
  std::vector<GradedSample> samples;  // in sampling order
};

// Correctness of the most frequent non-empty extracted answer among the first k graded samples
// (ties: the answer seen first); false when no sample has an extracted answer.
bool majority_correct(const std::vector<GradedSample>& samples, int64_t k);

// The test fraction a result reports: details.tests_passed / details.tests_total when present,
// else the reward.
double test_fraction_from_result(const nlohmann::json& result);

// {"overall": {...}, "per_domain": {"math": {...}, ...}} with prompts, samples, failed_feedback,
// avg@n, pass@k / best@k / maj@k for each k, and for code domains accuracy and score.
nlohmann::json summarize_eval(const std::vector<PromptSamples>& prompts, const std::vector<int>& ks);

// Appends one JSON object per line and flushes, so a crashed run keeps its metrics.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  explicit MetricsWriter(const std::filesystem::path& path, bool append);
  void write(const nlohmann::json& record);
  bool is_open() const { return out_.is_open(); }

 private:
  std::ofstream out_;
};

// Reads a metrics JSONL file (bad lines are reported in `errors` and skipped) and writes one SVG
// line chart per numeric metric against "step", plus index.html. Returns the files written.
std::vector<std::filesystem::path> plot_metrics(const std::filesystem::path& jsonl,
                                                const std::filesystem::path& out_dir,
                                                std::vector<std::string>* errors = nullptr);

// One SVG line chart (exposed for tests).
std::string render_line_chart_svg(const std::string& title,
                                  const std::vector<std::pair<double, double>>& points);

}  // namespace distil::trainer
