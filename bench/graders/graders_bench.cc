// graders_bench: grading cost, each with its reference measured in the same run.
//  1. math: median time per case over the Math-Verify conformance file (extract + parse + compare
//     both sides), against sympy's simplify(a - b) == 0 on the same parsed pairs (the CAS step
//     Math-Verify runs; Math-Verify itself cannot be installed offline).
//  2. code: grading a Python solution against 20 stdin tests in the sandbox, against running the
//     same 20 tests bare (/usr/bin/python3 per test, no sandbox, no grading).
//  3. code, 4 tests (issue 13): warm fork server vs a fork server per task vs 4 bare runs.
// Usage: graders_bench [--repeat N] [--skip-code] [--skip-sympy] [--only-code4]
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cpu_info.h"
#include "graders/code_runner.h"
#include "graders/grader.h"
#include "graders/math_answer.h"
#include "graders/math_value.h"

extern char** environ;

using namespace distil;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

struct Row {
  std::string gold, pred;
  graders::math::CompareOptions compare;
  graders::math::ExtractTargets targets;
};

std::vector<Row> load_rows() {
  std::ifstream in(std::string(DISTIL_SOURCE_DIR) + "/tests/graders/conformance/math/mathverify_cases.jsonl");
  std::vector<Row> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    const auto& o = j["options"];
    Row r;
    r.gold = j["gold"];
    r.pred = j["pred"];
    r.compare.float_places = o.value("precision", o.value("float_rounding", 6));
    r.compare.strict = o.value("strict", true);
    r.compare.allow_set_relation = o.value("allow_set_relation_comp", false);
    if (o.contains("match_types") && o["match_types"].is_array()) {
      r.targets.latex = r.targets.expr = false;
      for (const auto& t : o["match_types"]) {
        r.targets.latex |= t == "latex";
        r.targets.expr |= t == "expr";
      }
    }
    if (o.value("harness", "").rfind("sympy_expr_eq", 0) == 0) {
      r.gold = std::regex_replace(r.gold, std::regex(R"(Rational\((-?\d+),\s*(-?\d+)\))"), "$$\\frac{$1}{$2}$$");
      r.pred = std::regex_replace(r.pred, std::regex(R"(Float\(([-0-9.eE]+)\))"), "$$$1$$");
    }
    rows.push_back(r);
  }
  return rows;
}

bool grade_row(const Row& r) {
  auto g = graders::math::extract_answers(r.gold, r.targets);
  auto p = graders::math::extract_answers(r.pred, r.targets);
  return !g.empty() && !p.empty() && graders::math::equivalent(g, p, r.compare);
}

// GiNaC prints x^2 and sqrt(2); sympy reads ** and sqrt.
std::string to_sympy(const GiNaC::ex& e) {
  std::ostringstream out;
  out << e;
  std::string s = out.str();
  std::string r;
  for (char c : s) {
    if (c == '^') r += "**";
    else r += c;
  }
  return r;
}

int run_process(const std::vector<std::string>& argv, const std::string& stdin_path, const std::string& stdout_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, stdin_path.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void math_bench(int repeat, bool run_sympy) {
  const auto rows = load_rows();
  if (rows.empty()) {
    std::cout << "math: conformance file not found, skipped\n";
    return;
  }
  for (const auto& r : rows) grade_row(r);  // warm-up (GiNaC's first use)
  std::vector<double> per_row;
  const auto all_start = Clock::now();
  for (const auto& r : rows) {
    std::vector<double> samples;
    for (int k = 0; k < repeat; ++k) {
      const auto start = Clock::now();
      grade_row(r);
      samples.push_back(ms_since(start));
    }
    per_row.push_back(median(samples));
  }
  const double total_ms = ms_since(all_start) / repeat;
  const double ours = median(per_row);

  // Reference: sympy on the scalar pairs our parser produced.
  double sympy_median = -1;
  std::vector<double> same_rows;  // distil's per-row medians on the rows the reference also ran
  std::size_t sympy_pairs = 0;
  if (run_sympy) {
    nlohmann::json pairs = nlohmann::json::array();
    for (std::size_t index = 0; index < rows.size(); ++index) {
      const auto& r = rows[index];
      auto g = graders::math::extract_answers(r.gold, r.targets);
      auto p = graders::math::extract_answers(r.pred, r.targets);
      if (g.empty() || p.empty() || !g[0].parsed || !p[0].parsed) continue;
      std::lock_guard lock(graders::math::ginac_mutex());
      const auto& gv = g[0].parsed->value;
      const auto& pv = p[0].parsed->value;
      if (gv.kind != graders::math::Value::Kind::scalar || pv.kind != graders::math::Value::Kind::scalar) continue;
      if (GiNaC::is_a<GiNaC::matrix>(gv.ex) || GiNaC::is_a<GiNaC::matrix>(pv.ex)) continue;
      pairs.push_back({to_sympy(gv.ex), to_sympy(pv.ex)});
      same_rows.push_back(per_row[index]);
    }
    sympy_pairs = pairs.size();
    const std::string dir = "/tmp/distil_graders_bench_" + std::to_string(getpid());
    mkdir(dir.c_str(), 0700);
    std::ofstream(dir + "/pairs.json") << pairs.dump();
    std::ofstream(dir + "/ref.py") << R"PY(
import json, sys, time, statistics
import sympy
pairs = json.load(open(sys.argv[1]))
repeat = int(sys.argv[2])
loc = {"E": sympy.E, "Pi": sympy.pi, "I": sympy.I, "oo": sympy.Symbol("oo")}
def one(a, b):
    x = sympy.sympify(a, locals=loc); y = sympy.sympify(b, locals=loc)
    return sympy.simplify(x - y) == 0
meds = []
for a, b in pairs:
    try:
        one(a, b)
    except Exception:
        continue  # a form sympy cannot read is left out of the reference, not counted as fast
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); one(a, b); ts.append((time.perf_counter() - t) * 1000)
    meds.append(statistics.median(ts))
print(statistics.median(meds) if meds else -1, len(meds))
)PY";
    const std::string cmd = "/usr/bin/python3 " + dir + "/ref.py " + dir + "/pairs.json " + std::to_string(std::max(1, repeat / 4));
    if (FILE* f = popen(cmd.c_str(), "r")) {
      char buf[128] = {0};
      if (fgets(buf, sizeof buf, f)) {
        std::istringstream fields(buf);
        fields >> sympy_median >> sympy_pairs;
      }
      pclose(f);
    }
    std::remove((dir + "/pairs.json").c_str());
    std::remove((dir + "/ref.py").c_str());
    rmdir(dir.c_str());
  }

  std::printf("\n== math: %zu conformance rows, median of %d runs per row ==\n", rows.size(), repeat);
  std::printf("%-58s %12s %12s\n", "what", "median ms", "p90 ms");
  std::printf("%-58s %12.4f %12.4f\n", "distil math grading (extract + parse + compare, per row)", ours, percentile(per_row, 0.9));
  std::printf("%-58s %12.4f\n", "distil whole file / rows (mean per row)", total_ms / static_cast<double>(rows.size()));
  if (sympy_median >= 0) {
    std::printf("%-58s %12.4f   (%zu scalar pairs)\n", "reference: sympy simplify(a-b)==0 on the same pairs", sympy_median, sympy_pairs);
    std::printf("%-58s %12.4f\n", "distil on those same rows (full extract + parse + compare)", median(same_rows));
    std::printf("%-58s %12.1fx\n", "ratio reference / distil on the same rows", sympy_median / median(same_rows));
  } else if (run_sympy) {
    std::printf("reference: /usr/bin/python3 with sympy unavailable, skipped\n");
  }
  std::printf("%-58s %12s\n", "target (issue 4)", "<= 0.3");
  std::printf("%-58s %12s\n", "Math-Verify 0.8.0, quoted from tests/graders/conformance/math", "~32");
}

void code_bench(int repeat) {
  std::unique_ptr<sandbox::Sandbox> box;
  try {
    box = std::make_unique<sandbox::Sandbox>();
  } catch (const std::exception& e) {
    std::printf("\n== code: no sandbox on this host (%s), skipped ==\n", e.what());
    return;
  }
  const std::string solution = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums[1:]))\n";
  nlohmann::json tests = nlohmann::json::array();
  std::vector<std::string> inputs;
  for (int i = 0; i < 20; ++i) {
    std::string in = std::to_string(i + 1) + "\n";
    long sum = 0;
    for (int k = 1; k <= i + 1; ++k) {
      in += std::to_string(k * 7) + (k == i + 1 ? "\n" : " ");
      sum += k * 7;
    }
    inputs.push_back(in);
    tests.push_back({{"input", in}, {"output", std::to_string(sum) + "\n"}});
  }
  const tasks::Task task = tasks::task_from_json({{"id", "bench"}, {"domain", "code"}, {"prompt", "sum"}, {"tests", tests}});
  const std::string response = "```python\n" + solution + "```";
  graders::GradeContext context{box.get()};
  graders::grade(graders::Registry::builtin(), task, response, {}, context);  // warm-up
  const std::string dir = "/tmp/distil_graders_bench_code_" + std::to_string(getpid());
  mkdir(dir.c_str(), 0700);
  std::ofstream(dir + "/prog.py") << solution;
  for (std::size_t i = 0; i < inputs.size(); ++i) std::ofstream(dir + "/in" + std::to_string(i)) << inputs[i];
  // Side by side: one graded round, then one bare round, alternating, so load changes hit both.
  std::vector<double> graded, bare;
  for (int k = 0; k < repeat; ++k) {
    auto start = Clock::now();
    auto r = graders::grade(graders::Registry::builtin(), task, response, {}, context);
    graded.push_back(ms_since(start));
    if (!r.passed) std::printf("warning: benchmark solution did not pass: %s\n", r.feedback.c_str());
    start = Clock::now();
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      run_process({"/usr/bin/python3", dir + "/prog.py"}, dir + "/in" + std::to_string(i), dir + "/out");
      (void)slurp(dir + "/out");
    }
    bare.push_back(ms_since(start));
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) std::remove((dir + "/in" + std::to_string(i)).c_str());
  std::remove((dir + "/prog.py").c_str());
  std::remove((dir + "/out").c_str());
  rmdir(dir.c_str());
  // Where the graded time goes: the same grading with the first 2 tests only (fork-server start
  // plus two tests), so (T20 - T2) / 18 is the cost per test.
  nlohmann::json two = nlohmann::json::array({tests[0], tests[1]});
  const tasks::Task task2 = tasks::task_from_json({{"id", "bench2"}, {"domain", "code"}, {"prompt", "sum"}, {"tests", two}});
  std::vector<double> graded2;
  for (int k = 0; k < repeat; ++k) {
    auto start = Clock::now();
    graders::grade(graders::Registry::builtin(), task2, response, {}, context);
    graded2.push_back(ms_since(start));
  }
  const double g2 = median(graded2);
  // The sandbox alone, the same program without the grader's runner: 2 inputs and 20.
  std::vector<double> raw2, raw20;
  sandbox::Program raw;
  raw.source = solution;
  const std::vector<std::string> two_inputs(inputs.begin(), inputs.begin() + 2);
  for (int k = 0; k < repeat; ++k) {
    auto start = Clock::now();
    box->run_batch(raw, two_inputs, {});
    raw2.push_back(ms_since(start));
    start = Clock::now();
    box->run_batch(raw, inputs, {});
    raw20.push_back(ms_since(start));
  }
  const double g = median(graded), b = median(bare);
  std::printf("\n== code: one Python solution, 20 stdin tests, median of %d alternating runs ==\n", repeat);
  std::printf("%-58s %12s\n", "what", "median ms");
  std::printf("%-58s %12.1f\n", "distil code grader (sandbox run_batch + LCB compare)", g);
  std::printf("%-58s %12.1f\n", "reference: 20 bare /usr/bin/python3 runs, no sandbox", b);
  std::printf("%-58s %12.2fx\n", "ratio distil / bare (target <= 0.3)", g / b);
  std::printf("%-58s %12.1f\n", "distil, first 2 tests only (server start + 2 tests)", g2);
  std::printf("%-58s %12.2f\n", "  so per test: (T20 - T2) / 18", (g - g2) / 18);
  std::printf("%-58s %12.1f / %.1f\n", "sandbox run_batch alone, no runner: 2 / 20 inputs", median(raw2), median(raw20));
  std::printf("%-58s %12s\n", "per-round ratios", "");
  for (std::size_t k = 0; k < graded.size(); ++k) std::printf("  round %zu: %.1f / %.1f ms = %.3fx\n", k + 1, graded[k], bare[k], graded[k] / bare[k]);
}

// Issue 13, item 7: one code task with 4 stdin tests, graded through a warm fork server (the
// default: servers kept between batches), through a fork server started for the task
// (Config::warm_fork_servers = 0, what every task paid before), and the same 4 tests as bare
// interpreter runs; alternating rounds, medians, ratios to bare.
void code4_bench(int repeat) {
  std::unique_ptr<sandbox::Sandbox> warm_box, cold_box;
  try {
    warm_box = std::make_unique<sandbox::Sandbox>();
    sandbox::Config cold;
    cold.warm_fork_servers = 0;
    cold_box = std::make_unique<sandbox::Sandbox>(cold);
  } catch (const std::exception& e) {
    std::printf("\n== code, 4 tests: no sandbox on this host (%s), skipped ==\n", e.what());
    return;
  }
  const std::string solution =
      "import sys\nfrom collections import Counter\nnums = list(map(int, sys.stdin.read().split()))\n"
      "c = Counter(nums[1:])\nprint(sum(nums[1:]), max(c.values()))\n";
  nlohmann::json tests = nlohmann::json::array();
  std::vector<std::string> inputs;
  for (int i = 0; i < 4; ++i) {
    std::string in = std::to_string(50 * (i + 1)) + "\n";
    long sum = 0;
    std::map<long, int> counts;
    for (int k = 1; k <= 50 * (i + 1); ++k) {
      const long v = (k * 37) % 11;
      in += std::to_string(v) + (k == 50 * (i + 1) ? "\n" : " ");
      sum += v;
      ++counts[v];
    }
    int top = 0;
    for (const auto& [v, n] : counts) top = std::max(top, n);
    inputs.push_back(in);
    tests.push_back({{"input", in}, {"output", std::to_string(sum) + " " + std::to_string(top) + "\n"}});
  }
  const tasks::Task task = tasks::task_from_json({{"id", "bench4"}, {"domain", "code"}, {"prompt", "sum"}, {"tests", tests}});
  const std::string response = "```python\n" + solution + "```";
  graders::GradeContext warm{warm_box.get()}, cold{cold_box.get()};
  for (auto* c : {&warm, &cold}) {
    auto r = graders::grade(graders::Registry::builtin(), task, response, {}, *c);  // warm-up
    if (!r.passed) std::printf("warning: benchmark solution did not pass: %s\n", r.feedback.c_str());
  }
  const std::string dir = "/tmp/distil_graders_bench_code4_" + std::to_string(getpid());
  mkdir(dir.c_str(), 0700);
  std::ofstream(dir + "/prog.py") << solution;
  std::ofstream(dir + "/pass.py") << "pass\n";
  for (std::size_t i = 0; i < inputs.size(); ++i) std::ofstream(dir + "/in" + std::to_string(i)) << inputs[i];
  double load_start[3] = {0, 0, 0}, load_end[3] = {0, 0, 0};
  getloadavg(load_start, 3);
  std::vector<double> w, c, bare, bare_s;
  bool reused = true;
  for (int k = 0; k < repeat; ++k) {
    auto start = Clock::now();
    auto rw = graders::grade(graders::Registry::builtin(), task, response, {}, warm);
    w.push_back(ms_since(start));
    start = Clock::now();
    auto rc = graders::grade(graders::Registry::builtin(), task, response, {}, cold);
    c.push_back(ms_since(start));
    if (!rw.passed || !rc.passed) std::printf("warning: a graded round did not pass\n");
    start = Clock::now();
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      run_process({"/usr/bin/python3", dir + "/prog.py"}, dir + "/in" + std::to_string(i), dir + "/out");
      (void)slurp(dir + "/out");
    }
    bare.push_back(ms_since(start));
    start = Clock::now();
    for (std::size_t i = 0; i < inputs.size(); ++i)
      run_process({"/usr/bin/python3", "-S", dir + "/pass.py"}, dir + "/in" + std::to_string(i), dir + "/out");
    bare_s.push_back(ms_since(start));
  }
  // Breakdown: the same task with its 4 tests twice over (8 tests), warm: (T8 - T4) / 4 is the
  // cost of one more test, T4 - 4 x that the cost per task (grader, batch start and end).
  nlohmann::json eight = tests;
  for (const auto& t : tests) eight.push_back(t);
  const tasks::Task task8 = tasks::task_from_json({{"id", "bench8"}, {"domain", "code"}, {"prompt", "sum"}, {"tests", eight}});
  std::vector<double> w8;
  for (int k = 0; k < repeat; ++k) {
    const auto start = Clock::now();
    graders::grade(graders::Registry::builtin(), task8, response, {}, warm);
    w8.push_back(ms_since(start));
  }
  getloadavg(load_end, 3);
  // That the warm rounds really ran on a kept server: the sandbox says which batch of its server
  // each run was.
  {
    sandbox::Program probe;
    probe.source = "print(1)\n";
    probe.prelude = graders::code::kLcbImports;  // the code grader's: servers are kept per prelude
    auto r = warm_box->run_batch(probe, {"", ""}, {});
    reused = !r.empty() && r[0].fork_server && r[0].fork_server_batch > 1;
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) std::remove((dir + "/in" + std::to_string(i)).c_str());
  for (const char* f : {"/prog.py", "/pass.py", "/out"}) std::remove((dir + f).c_str());
  rmdir(dir.c_str());
  const double mw = median(w), mc = median(c), mb = median(bare), ms = median(bare_s);
  std::printf("\n== code: one Python solution, 4 stdin tests, median of %d alternating rounds ==\n", repeat);
  std::printf("load average %.2f at the start, %.2f at the end\n", load_start[0], load_end[0]);
  std::printf("%-58s %10s %9s %9s\n", "what", "median ms", "vs bare", "vs cold");
  std::printf("%-58s %10.1f %8.2fx %8.2fx\n", "warm fork server (kept between tasks, the default)", mw, mw / mb, mw / mc);
  std::printf("%-58s %10.1f %8.2fx %8.2fx\n", "cold: a fork server per task (warm_fork_servers = 0)", mc, mc / mb, 1.0);
  std::printf("%-58s %10.1f %8.2fx\n", "reference: 4 bare /usr/bin/python3 runs of the solution", mb, 1.0);
  std::printf("%-58s %10.1f %8.2fx\n", "reference: 4 bare /usr/bin/python3 -S runs of 'pass'", ms, ms / mb);
  const double per_test = (median(w8) - mw) / 4;
  std::printf("%-58s %10.2f\n", "warm: one more test, (T8 - T4) / 4", per_test);
  std::printf("%-58s %10.2f\n", "warm: per task, T4 - 4 x that", mw - 4 * per_test);
  std::printf("%-58s %10s\n", "target (issue 13.7): warm / bare", "<= 0.3");
  std::printf("%-58s %10s\n", "warm rounds ran on a reused server", reused ? "yes" : "NO");
  std::printf("per-round ms (warm / cold / bare):");
  for (std::size_t k = 0; k < w.size(); ++k) std::printf(" %.1f/%.1f/%.1f", w[k], c[k], bare[k]);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 20;
  bool skip_code = false, run_sympy = true, only_code4 = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--repeat" && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else if (a == "--skip-code") skip_code = true;
    else if (a == "--skip-sympy") run_sympy = false;
    else if (a == "--only-code4") only_code4 = true;
    else {
      std::fprintf(stderr, "usage: graders_bench [--repeat N] [--skip-code] [--skip-sympy] [--only-code4]\n");
      return 2;
    }
  }
  {
    double load[3] = {0, 0, 0};
    getloadavg(load, 3);
    std::printf("%s, %ld cores online, load average %.2f\n", distil::common::cpu_description().c_str(),
                sysconf(_SC_NPROCESSORS_ONLN), load[0]);
  }
  if (!only_code4) math_bench(repeat, run_sympy);
  if (!skip_code) code4_bench(std::max(5, repeat));
  if (!skip_code && !only_code4) code_bench(std::max(3, repeat / 4));
  return 0;
}
