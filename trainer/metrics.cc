#include "trainer/metrics.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <stdexcept>

namespace distil::trainer {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (k < 1 || n < k || c < 0 || c > n) {
    throw std::invalid_argument("pass@k needs 1 <= k <= n and 0 <= c <= n (n=" + std::to_string(n) +
                                ", c=" + std::to_string(c) + ", k=" + std::to_string(k) + ")");
  }
  if (n - c < k) return 1.0;
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i), numerically stable (as in Codex).
  double fail = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i) fail *= 1.0 - static_cast<double>(k) / i;
  return 1.0 - fail;
}

bool majority_correct(const std::vector<GradedSample>& samples, int64_t k) {
  std::vector<std::string> order;
  std::map<std::string, std::pair<int, bool>> votes;  // answer -> (count, first sample passed)
  int64_t seen = 0;
  for (const auto& s : samples) {
    if (!s.graded) continue;
    if (seen++ >= k) break;
    if (s.extracted.empty()) continue;
    auto [it, inserted] = votes.try_emplace(s.extracted, 0, s.passed);
    if (inserted) order.push_back(s.extracted);
    ++it->second.first;
  }
  int best = 0;
  bool correct = false;
  for (const auto& answer : order) {  // strictly greater keeps the earliest on ties
    if (votes[answer].first > best) {
      best = votes[answer].first;
      correct = votes[answer].second;
    }
  }
  return correct;
}

double test_fraction_from_result(const nlohmann::json& result) {
  const auto details = result.find("details");
  if (details != result.end() && details->is_object()) {
    auto passed = details->find("tests_passed");
    auto total = details->find("tests_total");
    if (passed != details->end() && total != details->end() && passed->is_number() &&
        total->is_number() && total->get<double>() > 0) {
      return std::clamp(passed->get<double>() / total->get<double>(), 0.0, 1.0);
    }
  }
  auto reward = result.find("reward");
  return reward != result.end() && reward->is_number() ? reward->get<double>() : 0.0;
}

namespace {

struct Accumulator {
  int64_t prompts = 0, samples = 0, failed = 0;
  double avg_sum = 0.0, reward_sum = 0.0, score_sum = 0.0;
  bool is_code = false;
  std::map<int, double> pass_sum, maj_sum;
  std::map<int, int64_t> pass_count;  // prompts with at least k graded samples

  void add(const PromptSamples& p, const std::vector<int>& ks) {
    int64_t n = 0, c = 0;
    double reward = 0.0, score = 0.0;
    for (const auto& s : p.samples) {
      if (!s.graded) {
        ++failed;
        continue;
      }
      ++n;
      c += s.passed ? 1 : 0;
      reward += s.reward;
      score += s.test_fraction;
    }
    if (n == 0) return;
    ++prompts;
    samples += n;
    avg_sum += static_cast<double>(c) / n;
    reward_sum += reward / n;
    score_sum += score / n;
    for (int k : ks) {
      if (n < k) continue;
      pass_sum[k] += pass_at_k(n, c, k);
      maj_sum[k] += majority_correct(p.samples, k) ? 1.0 : 0.0;
      ++pass_count[k];
    }
  }

  nlohmann::json to_json() const {
    nlohmann::json j;
    j["prompts"] = prompts;
    j["samples"] = samples;
    j["failed_feedback"] = failed;
    const double denom = std::max<int64_t>(prompts, 1);
    j["avg@n"] = avg_sum / denom;
    j["mean_reward"] = reward_sum / denom;
    for (const auto& [k, sum] : pass_sum) {
      const double count = std::max<int64_t>(pass_count.at(k), 1);
      j["pass@" + std::to_string(k)] = sum / count;
      j["best@" + std::to_string(k)] = sum / count;
      j["maj@" + std::to_string(k)] = maj_sum.at(k) / count;
    }
    if (is_code) {
      j["accuracy"] = avg_sum / denom;
      j["score"] = score_sum / denom;
    }
    return j;
  }
};

}  // namespace

nlohmann::json summarize_eval(const std::vector<PromptSamples>& prompts, const std::vector<int>& ks) {
  Accumulator overall;
  std::map<std::string, Accumulator> per_domain;
  for (const auto& p : prompts) {
    overall.add(p, ks);
    auto& d = per_domain[p.domain];
    d.is_code = p.domain == "code";
    d.add(p, ks);
  }
  overall.is_code = per_domain.size() == 1 && per_domain.begin()->first == "code";
  nlohmann::json out;
  out["overall"] = overall.to_json();
  out["per_domain"] = nlohmann::json::object();
  for (const auto& [domain, acc] : per_domain) out["per_domain"][domain] = acc.to_json();
  return out;
}

MetricsWriter::MetricsWriter(const std::filesystem::path& path, bool append, TensorBoardOutput tensorboard)
    : out_(path, append ? std::ios::app : std::ios::trunc), on_tensorboard_error_(std::move(tensorboard.on_error)) {
  if (!out_) throw std::runtime_error("cannot open metrics file " + path.string());
  if (tensorboard.enabled) {
    // A new file per run and per resume: TensorBoard reads them all, in name (= time) order.
    events_ = std::make_unique<text::EventFileWriter>(path.parent_path().empty() ? "." : path.parent_path(),
                                                      tensorboard.purge_from_step);
  }
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!out_.is_open()) return;
  out_ << record.dump() << '\n';
  out_.flush();
  if (!events_ || !record.contains("step") || !record["step"].is_number_integer()) return;
  try {
    events_->add_scalars(record["step"].get<int64_t>(), text::tensorboard_scalars(record));
  } catch (const text::TensorBoardError& e) {
    // A half-written record may end the file; readers stop there, so nothing may follow it.
    events_.reset();
    if (on_tensorboard_error_) {
      on_tensorboard_error_(std::string(e.what()) + "; TensorBoard output stops, metrics.jsonl goes on");
    }
  }
}

namespace {

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::string format_number(double v) {
  std::ostringstream s;
  s << std::setprecision(4) << v;
  return s.str();
}

std::string safe_file_name(const std::string& key) {
  std::string out;
  for (char ch : key) out += (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-') ? ch : '_';
  return out;
}

void flatten_numbers(const nlohmann::json& j, const std::string& prefix,
                     std::map<std::string, double>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it->is_object()) {
      flatten_numbers(*it, key, out);
    } else if (it->is_number() && std::isfinite(it->get<double>())) {
      out[key] = it->get<double>();
    }
  }
}

}  // namespace

std::string render_line_chart_svg(const std::string& title,
                                  const std::vector<std::pair<double, double>>& points) {
  const double width = 640, height = 360, left = 70, right = 20, top = 40, bottom = 50;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  if (!points.empty()) {
    x_min = x_max = points.front().first;
    y_min = y_max = points.front().second;
    for (const auto& [x, y] : points) {
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_min = std::min(y_min, y);
      y_max = std::max(y_max, y);
    }
  }
  if (x_max == x_min) x_max = x_min + 1;
  if (y_max == y_min) {
    y_max += 0.5 * (std::abs(y_max) + 1);
    y_min -= 0.5 * (std::abs(y_min) + 1);
  }
  auto px = [&](double x) { return left + (x - x_min) / (x_max - x_min) * (width - left - right); };
  auto py = [&](double y) { return top + (y_max - y) / (y_max - y_min) * (height - top - bottom); };
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << width / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape_xml(title) << "</text>\n";
  // Axes with five ticks each.
  svg << "<line x1=\"" << left << "\" y1=\"" << height - bottom << "\" x2=\"" << width - right
      << "\" y2=\"" << height - bottom << "\" stroke=\"black\"/>\n"
      << "<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\""
      << height - bottom << "\" stroke=\"black\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double xv = x_min + (x_max - x_min) * i / 4.0, yv = y_min + (y_max - y_min) * i / 4.0;
    svg << "<text x=\"" << px(xv) << "\" y=\"" << height - bottom + 18
        << "\" text-anchor=\"middle\">" << format_number(xv) << "</text>\n"
        << "<line x1=\"" << left << "\" y1=\"" << py(yv) << "\" x2=\"" << width - right << "\" y2=\""
        << py(yv) << "\" stroke=\"#ddd\"/>\n"
        << "<text x=\"" << left - 6 << "\" y=\"" << py(yv) + 4 << "\" text-anchor=\"end\">"
        << format_number(yv) << "</text>\n";
  }
  svg << "<text x=\"" << width / 2 << "\" y=\"" << height - 10 << "\" text-anchor=\"middle\">step</text>\n";
  if (!points.empty()) {
    svg << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"";
    for (const auto& [x, y] : points) svg << px(x) << "," << py(y) << " ";
    svg << "\"/>\n";
    for (const auto& [x, y] : points) {
      svg << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"2.5\" fill=\"#1f77b4\"/>\n";
    }
  }
  svg << "</svg>\n";
  return svg.str();
}

std::vector<std::filesystem::path> plot_metrics(const std::filesystem::path& jsonl,
                                                const std::filesystem::path& out_dir,
                                                std::vector<std::string>* errors) {
  std::ifstream in(jsonl);
  if (!in) throw std::runtime_error("cannot open metrics file " + jsonl.string());
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  std::string line;
  std::size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      if (errors) errors->push_back(jsonl.string() + ":" + std::to_string(line_number) + ": " + e.what());
      continue;
    }
    if (!record.is_object() || !record.contains("step") || !record["step"].is_number()) {
      if (errors) {
        errors->push_back(jsonl.string() + ":" + std::to_string(line_number) +
                          ": step: missing or not a number");
      }
      continue;
    }
    // A step that did not count (every rollout lost its feedback) is made again under the same
    // number; only the step that counted is plotted.
    if (record.contains("failed") && record["failed"] == true) continue;
    const double step = record["step"].get<double>();
    std::map<std::string, double> values;
    flatten_numbers(record, "", values);
    for (const auto& [key, value] : values) {
      if (key != "step") series[key].emplace_back(step, value);
    }
  }
  std::filesystem::create_directories(out_dir);
  std::vector<std::filesystem::path> written;
  std::ostringstream index;
  index << "<!doctype html><html><head><meta charset=\"utf-8\"><title>" << escape_xml(jsonl.string())
        << "</title></head><body><h1>" << escape_xml(jsonl.string()) << "</h1>\n";
  for (const auto& [key, points] : series) {
    const auto file = out_dir / (safe_file_name(key) + ".svg");
    std::ofstream out(file);
    if (!out) throw std::runtime_error("cannot write " + file.string());
    out << render_line_chart_svg(key, points);
    written.push_back(file);
    index << "<img src=\"" << escape_xml(file.filename().string()) << "\" alt=\"" << escape_xml(key)
          << "\">\n";
  }
  index << "</body></html>\n";
  const auto index_file = out_dir / "index.html";
  std::ofstream(index_file) << index.str();
  written.push_back(index_file);
  return written;
}

}  // namespace distil::trainer
