// Evaluation metrics (DESIGN.md "Evaluation metrics"), the per-step metrics JSONL and its SVG plots.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/text/tensorboard.h"

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

// TensorBoard event files beside metrics.jsonl (train.tensorboard).
struct TensorBoardOutput {
  bool enabled = false;
  // A resumed run's first step: TensorBoard hides the points of earlier files from it on
  // (the steps made again), as metrics.jsonl drops their lines.
  std::optional<int64_t> purge_from_step;
  // Told once when an event cannot be written; TensorBoard output then stops for the run
  // (metrics.jsonl, the record the plots are made from, goes on).
  std::function<void(const std::string&)> on_error;
};

// Appends one JSON object per line and flushes, so a crashed run keeps its metrics; with
// TensorBoard output, also each record's scalars (text::tensorboard_scalars) as one event.
class MetricsWriter {
 public:
  MetricsWriter() = default;
  // Throws when metrics.jsonl or the event file cannot be created.
  MetricsWriter(const std::filesystem::path& path, bool append, TensorBoardOutput tensorboard = {});
  void write(const nlohmann::json& record);
  bool is_open() const { return out_.is_open(); }
  // The event file being written; empty without TensorBoard output.
  std::filesystem::path tensorboard_file() const { return events_ ? events_->path() : std::filesystem::path(); }

 private:
  std::ofstream out_;
  std::unique_ptr<text::EventFileWriter> events_;
  std::function<void(const std::string&)> on_tensorboard_error_;
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
