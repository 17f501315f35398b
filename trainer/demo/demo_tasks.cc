#include "trainer/demo/demo_tasks.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace distil::trainer::demo {
namespace {

constexpr int kMinOperand = 10;
constexpr int kMaxOperand = 99;

uint64_t problem_key(const Problem& p) {
  return (static_cast<uint64_t>(p.operation) << 32) | (static_cast<uint64_t>(p.left) << 16) |
         static_cast<uint64_t>(p.right);
}

int swap_last_two_digits(int value) {
  if (value < 10) return value;
  const int ones = value % 10;
  const int tens = (value / 10) % 10;
  return value - ones - 10 * tens + 10 * ones + tens;
}

// The answer a solver gets when it forgets the carry (addition) or subtracts the smaller ones
// digit from the larger one instead of borrowing (subtraction); the correct answer when the
// problem has no carry/borrow.
int carry_mistake(const Problem& p) {
  const int lo = p.left % 10, ro = p.right % 10;
  if (p.operation == Operation::add) return lo + ro >= 10 ? p.answer() - 10 : p.answer();
  if (lo >= ro) return p.answer();
  return 10 * (p.left / 10 - p.right / 10) + (ro - lo);
}

}  // namespace

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string Problem::id() const {
  return std::string(operation == Operation::add ? "add-" : "sub-") + std::to_string(left) + "-" +
         std::to_string(right);
}

std::string Problem::prompt() const {
  return "What is " + std::to_string(left) + (operation == Operation::add ? " + " : " - ") +
         std::to_string(right) + "? Answer in \\boxed{}.";
}

std::string boxed_response(int value) { return "\\boxed{" + std::to_string(value) + "}"; }

ProblemPools make_pools(const SplitSpec& spec) {
  if (!(spec.heldout_fraction > 0.0 && spec.heldout_fraction < 1.0))
    throw std::invalid_argument("heldout_fraction: must be strictly between 0 and 1");
  // Held out when the seeded hash falls below the fraction of the 64-bit range.
  const auto threshold = static_cast<uint64_t>(spec.heldout_fraction * 18446744073709551615.0);
  ProblemPools pools;
  for (Operation op : {Operation::add, Operation::subtract}) {
    for (int left = kMinOperand; left <= kMaxOperand; ++left) {
      for (int right = kMinOperand; right <= kMaxOperand; ++right) {
        if (op == Operation::subtract && right > left) continue;  // answers stay non-negative
        Problem p{op, left, right};
        (splitmix64(problem_key(p) ^ splitmix64(spec.seed)) < threshold ? pools.heldout : pools.train).push_back(p);
      }
    }
  }
  return pools;
}

std::vector<Problem> sample_problems(const std::vector<Problem>& pool, std::size_t count, uint64_t seed) {
  return sample_distinct(pool, count, seed, "problems");
}

tasks::Task to_task(const Problem& problem) {
  tasks::Task task;
  task.id = problem.id();
  task.domain = "math";
  task.prompt = problem.prompt();
  task.answer = std::to_string(problem.answer());
  task.metadata = {{"source", "distil-demo"},
                   {"operation", problem.operation == Operation::add ? "add" : "subtract"},
                   {"left", problem.left},
                   {"right", problem.right}};
  return task;
}

void write_tasks_jsonl(const std::filesystem::path& path, const std::vector<tasks::Task>& records) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path.string() + ": cannot open for writing");
  for (const tasks::Task& t : records) out << tasks::to_json(t).dump() << '\n';
  out.flush();
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

void write_task_jsonl(const std::filesystem::path& path, const std::vector<Problem>& problems) {
  std::vector<tasks::Task> records;
  for (const Problem& p : problems) records.push_back(to_task(p));
  write_tasks_jsonl(path, records);
}

int plausible_wrong_answer(const Problem& problem, std::mt19937_64& rng) {
  const int correct = problem.answer();
  for (;;) {
    int candidate = correct;
    switch (rng() % 5) {
      case 0: candidate = carry_mistake(problem); break;
      case 1: candidate = correct + 1; break;
      case 2: candidate = correct - 1; break;
      case 3: candidate = correct + (rng() % 2 ? 10 : -10); break;
      case 4: candidate = swap_last_two_digits(correct); break;
    }
    if (candidate != correct && candidate >= 0) return candidate;
  }
}

}  // namespace distil::trainer::demo
