// Options parsing, the result's JSON form, the registry and the timed grade() entry point.
#include "graders/grader.h"

#include <chrono>
#include <mutex>
#include <stdexcept>

#include "graders/builtin_graders.h"
#include "graders/text_util.h"

namespace distil::graders {
namespace {

[[noreturn]] void bad_option(const std::string& key, const std::string& problem) {
  throw std::invalid_argument("options." + key + ": " + problem);
}

bool get_bool(const nlohmann::json& v, const std::string& key) {
  if (!v.is_boolean()) bad_option(key, std::string("must be a boolean, got ") + v.type_name());
  return v.get<bool>();
}

double get_number(const nlohmann::json& v, const std::string& key, double lo, double hi) {
  if (!v.is_number()) bad_option(key, std::string("must be a number, got ") + v.type_name());
  double x = v.get<double>();
  if (!(x >= lo && x <= hi)) bad_option(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

long long get_integer(const nlohmann::json& v, const std::string& key, long long lo, long long hi) {
  if (!v.is_number_integer()) bad_option(key, std::string("must be an integer, got ") + v.type_name());
  long long x = v.get<long long>();
  if (x < lo || x > hi) bad_option(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

}  // namespace

GradeOptions options_from_json(const nlohmann::json& j, const GradeOptions& defaults) {
  GradeOptions o = defaults;
  if (j.is_null()) return o;
  if (!j.is_object()) throw std::invalid_argument(std::string("options: must be an object, got ") + j.type_name());
  for (const auto& [key, v] : j.items()) {
    if (key == "reveal_answer") o.reveal_answer = get_bool(v, key);
    else if (key == "run_all_tests") o.run_all_tests = get_bool(v, key);
    else if (key == "max_failures_shown") o.max_failures_shown = static_cast<int>(get_integer(v, key, 0, 100));
    else if (key == "max_feedback_chars") o.max_feedback_chars = static_cast<std::size_t>(get_integer(v, key, 100, 1 << 20));
    else if (key == "per_test_timeout_s") o.per_test_timeout_s = get_number(v, key, 0.05, 60.0);
    else if (key == "memory_mb") o.memory_mb = static_cast<std::size_t>(get_integer(v, key, 16, 16384));
    else if (key == "float_places") o.float_places = static_cast<int>(get_integer(v, key, 0, 15));
    else if (key == "relative_tolerance") o.relative_tolerance = get_number(v, key, 0.0, 1.0);
    else if (key == "science_mode") {
      if (!v.is_string() || (v.get<std::string>() != "default" && v.get<std::string>() != "strict"))
        bad_option(key, "must be \"default\" or \"strict\"");
      o.science_mode = v.get<std::string>();
    }
    else bad_option(key, "unknown option");
  }
  return o;
}

nlohmann::json to_json(const GradeResult& r) {
  return {{"task_id", r.task_id}, {"reward", r.reward},     {"passed", r.passed},
          {"verdict", r.verdict}, {"feedback", r.feedback}, {"informative", r.informative},
          {"extracted", r.extracted},
          {"details", r.details}, {"timing", r.timing}};
}

Registry& Registry::builtin() {
  static Registry* registry = [] {
    auto* r = new Registry;
    // One line per built-in grader; a new domain adds its own line here (docs/graders.md).
    r->add("science", make_science_grader);
    r->add("math", make_math_grader);
    r->add("code", make_code_grader);
    r->add("script", make_script_grader);
    r->set_domain_default("science", "science");
    r->set_domain_default("math", "math");
    r->set_domain_default("code", "code");
    return r;
  }();
  return *registry;
}

void Registry::add(const std::string& name, Factory factory) {
  if (name.empty()) throw std::invalid_argument("grader name must not be empty");
  if (graders_.count(name)) throw std::invalid_argument("grader \"" + name + "\" is already registered");
  if (!factory) throw std::invalid_argument("grader \"" + name + "\": empty factory");
  auto grader = factory();
  if (!grader) throw std::invalid_argument("grader \"" + name + "\": factory returned null");
  graders_.emplace(name, std::move(grader));
}

const Grader* Registry::find(const std::string& name) const {
  auto it = graders_.find(name);
  return it == graders_.end() ? nullptr : it->second.get();
}

const Grader& Registry::for_task(const tasks::Task& task) const {
  if (!task.grader.empty()) {
    if (const Grader* g = find(task.grader)) return *g;
    throw tasks::TaskError("grader", "unknown grader \"" + task.grader + "\" (known: " + [&] {
      std::string list;
      for (const auto& n : names()) list += (list.empty() ? "" : ", ") + n;
      return list;
    }() + ")");
  }
  auto it = domain_defaults_.find(task.domain);
  if (it != domain_defaults_.end()) {
    if (const Grader* g = find(it->second)) return *g;
  }
  if (const Grader* g = find(task.domain)) return *g;
  throw tasks::TaskError("domain", "no grader for domain \"" + task.domain + "\"; name one in the task's \"grader\" field");
}

void Registry::set_domain_default(const std::string& domain, const std::string& grader) {
  domain_defaults_[domain] = grader;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, grader] : graders_) out.push_back(name);
  return out;
}

GradeResult grade(const Registry& registry, const tasks::Task& task, const std::string& response,
                  const GradeOptions& options, GradeContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const Grader& grader = registry.for_task(task);
  GradeResult result;
  try {
    result = grader.grade(task, response, options, context);
  } catch (const tasks::TaskError&) {
    throw;
  } catch (const std::exception& e) {
    // A grader failing on its own infrastructure (sandbox unavailable, ...) is reported as a
    // result so one item never takes down a batch.
    result = GradeResult{};
    result.verdict = "sandbox_error";
    result.feedback = "The grader could not run: " + std::string(e.what());
    result.details = {{"error", e.what()}};
  }
  result.task_id = task.id;
  if (!(result.reward >= 0.0)) result.reward = 0.0;
  if (result.reward > 1.0) result.reward = 1.0;
  if (result.feedback.size() > options.max_feedback_chars) {
    result.feedback = text::truncate_utf8(result.feedback, options.max_feedback_chars, "\n... (truncated)");
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  result.timing["grade_ms"] = ms;
  result.details["grader"] = grader.name();
  return result;
}

}  // namespace distil::graders
