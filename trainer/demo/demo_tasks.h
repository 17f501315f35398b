// The demo's built-in task domain: two-digit addition and subtraction, answered in \boxed{}.
// Procedurally generated from a seed. The whole problem space is enumerated and every problem is
// assigned to the train or held-out pool by a seeded hash of its operands, so the two splits are
// disjoint by construction (not by rejection sampling), and the pretraining corpus draws only
// from the train pool.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tasks/task.h"

namespace distil::trainer::demo {

enum class Operation { add, subtract };

struct Problem {
  Operation operation = Operation::add;
  int left = 0;
  int right = 0;
  int answer() const { return operation == Operation::add ? left + right : left - right; }
  std::string id() const;      // "add-47-38": stable, unique per problem
  std::string prompt() const;  // the user message
};

// The format a response is expected in ("\boxed{85}"), for correct or wrong answers alike.
std::string boxed_response(int value);

struct SplitSpec {
  uint64_t seed = 0;
  double heldout_fraction = 0.2;  // share of the problem space reserved for held-out tasks
};

// Deterministic: the same spec gives the same pools. Throws std::invalid_argument naming the
// field for a fraction outside (0, 1).
struct ProblemPools {
  std::vector<Problem> train;
  std::vector<Problem> heldout;
};
ProblemPools make_pools(const SplitSpec& spec);

// SplitMix64: a seeded, platform-independent hash, so pools are the same everywhere (std::hash
// is not specified and may differ between standard libraries). Shared by both demo domains.
uint64_t splitmix64(uint64_t x);

// `count` distinct items drawn from `pool` with `seed` (`noun` names them in the error); throws
// std::invalid_argument if the pool is smaller than `count`. Fisher-Yates with our own index
// draws: std::shuffle's algorithm is implementation-defined.
template <typename T>
std::vector<T> sample_distinct(const std::vector<T>& pool, std::size_t count, uint64_t seed, const char* noun) {
  if (count > pool.size())
    throw std::invalid_argument("count: " + std::to_string(count) + " " + noun + " requested but the pool has " +
                                std::to_string(pool.size()));
  std::vector<T> shuffled = pool;
  std::mt19937_64 rng(seed);
  for (std::size_t i = shuffled.size(); i > 1; --i) std::swap(shuffled[i - 1], shuffled[rng() % i]);
  shuffled.resize(count);
  return shuffled;
}

// Writes one task record per line; throws std::runtime_error naming the path on I/O failure.
void write_tasks_jsonl(const std::filesystem::path& path, const std::vector<tasks::Task>& records);

// `count` distinct problems drawn from `pool` with `seed`; throws std::invalid_argument if the
// pool is smaller than `count`.
std::vector<Problem> sample_problems(const std::vector<Problem>& pool, std::size_t count, uint64_t seed);

// Task records (domain "math", reference answer, metadata with the operation and operands).
tasks::Task to_task(const Problem& problem);

// Writes one task per line; throws std::runtime_error naming the path on I/O failure.
void write_task_jsonl(const std::filesystem::path& path, const std::vector<Problem>& problems);

// Plausible mistakes a weak solver makes: forgotten carry/borrow, off by one, off by ten, digits
// swapped. Never returns the correct answer (and never a negative number).
int plausible_wrong_answer(const Problem& problem, std::mt19937_64& rng);

}  // namespace distil::trainer::demo
