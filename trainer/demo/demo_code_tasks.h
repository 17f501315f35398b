// The demo's rich-feedback domain: small Python programs that transform a line of words, graded
// by the real code grader in the real sandbox, whose feedback shows the failing test (input, the
// program's output, the expected output) or the traceback.
//
// A rule has three factors, each one line of the program (or none):
//   order: keep | reverse (words = words[::-1]) | sort (words = sorted(words))
//   case:  keep | upper ([w.upper() for w in words]) | capitalize ([w.capitalize() ...])
//   separator: one of eight characters, named in words in the prompt ("joined by dashes")
// The 72 rules are split into train and held-out rules by a seeded hash, so held-out tasks ask
// for combinations never seen in training; each task is one rule with its own three stdin tests,
// chosen so that every wrong factor fails at least one test (no test's words are already in
// sorted or reverse-sorted order, and all words are lower case).
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "tasks/task.h"

namespace distil::trainer::demo {

enum class WordOrder { keep, reverse, sort };
enum class WordCase { keep, upper, capitalize };

struct WordRule {
  WordOrder order = WordOrder::keep;
  WordCase letter_case = WordCase::keep;
  int separator = 0;  // index into word_separators()
  bool operator==(const WordRule& o) const {
    return order == o.order && letter_case == o.letter_case && separator == o.separator;
  }
};

struct Separator {
  char symbol;
  const char* name;  // plural noun used in the prompt: "dashes"
};
const std::vector<Separator>& word_separators();

// All 72 rules in a fixed order.
std::vector<WordRule> all_word_rules();

// A program mistake a weak solver makes: a wrong factor, or a bug the traceback names.
enum class CodeBug { none, undefined_name, missing_split };

// The program for `rule`, as a ```python block. A bug changes one line (a misspelt variable, a
// missing .split()).
std::string word_program(const WordRule& rule, CodeBug bug = CodeBug::none);
// What the program prints for a line of words (the expected output of a test).
std::string apply_word_rule(const WordRule& rule, const std::vector<std::string>& words);

struct CodeTask {
  WordRule rule;
  int variant = 0;                          // which test set of this rule
  std::vector<std::vector<std::string>> tests;  // the words of each stdin test
  std::string id() const;                   // "words-sort-upper-dash-3"
  std::string prompt() const;
  tasks::Task to_task() const;              // domain "code", stdin tests, reference solution
};

struct CodeSplitSpec {
  uint64_t seed = 0;
  double heldout_fraction = 0.2;  // share of the rules held out
  int variants_per_rule = 20;     // tasks (test sets) per rule
};
struct CodeTaskPools {
  std::vector<CodeTask> train;
  std::vector<CodeTask> heldout;
};
// Deterministic. Throws std::invalid_argument naming the field for bad values; both pools are
// non-empty (a split that would empty one moves the rule nearest the threshold).
CodeTaskPools make_code_pools(const CodeSplitSpec& spec);

std::vector<CodeTask> sample_code_tasks(const std::vector<CodeTask>& pool, std::size_t count, uint64_t seed);
void write_code_task_jsonl(const std::filesystem::path& path, const std::vector<CodeTask>& tasks);

// A plausible wrong program for `task`: one or more factors changed (never all right), or a bug.
struct WrongProgram {
  WordRule rule;
  CodeBug bug = CodeBug::none;
};
WrongProgram plausible_wrong_program(const CodeTask& task, std::mt19937_64& rng);

}  // namespace distil::trainer::demo
