#include "trainer/demo/demo_code_tasks.h"

#include <algorithm>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "trainer/demo/demo_tasks.h"

namespace distil::trainer::demo {
namespace {

const std::vector<std::string>& vocabulary() {
  static const std::vector<std::string> words = {"apple", "bear",  "cedar", "dove", "eagle", "fig",   "grape", "hazel",
                                                 "iris",  "jade",  "kiwi",  "lemon", "mango", "nut",  "olive", "pear",
                                                 "quail", "rose",  "sage",  "tulip", "vine",  "wolf", "yak",   "zebra"};
  return words;
}

const char* order_id(WordOrder o) { return o == WordOrder::keep ? "keep" : o == WordOrder::reverse ? "reverse" : "sort"; }
const char* case_id(WordCase c) { return c == WordCase::keep ? "same" : c == WordCase::upper ? "upper" : "capitalize"; }
const char* separator_id(int i) {
  static const char* ids[] = {"dash", "comma", "colon", "plus", "slash", "star", "underscore", "dot"};
  return ids[i];
}

uint64_t rule_key(const WordRule& r) {
  return (static_cast<uint64_t>(r.order) << 16) | (static_cast<uint64_t>(r.letter_case) << 8) |
         static_cast<uint64_t>(r.separator);
}

bool sorted_either_way(const std::vector<std::string>& w) {
  return std::is_sorted(w.begin(), w.end()) || std::is_sorted(w.rbegin(), w.rend());
}

// Three tests of 3-5 distinct words, none in sorted or reverse-sorted order: then keep, reverse
// and sort give three different outputs, and every case change is visible (all lower case).
std::vector<std::vector<std::string>> make_tests(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<std::string>> tests;
  while (tests.size() < 3) {
    std::vector<std::string> pool = vocabulary();
    const std::size_t n = 3 + rng() % 3;
    std::vector<std::string> words;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t j = i + rng() % (pool.size() - i);
      std::swap(pool[i], pool[j]);
      words.push_back(pool[i]);
    }
    if (!sorted_either_way(words)) tests.push_back(std::move(words));
  }
  return tests;
}

std::string join_words(const std::vector<std::string>& words, const std::string& separator) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) out += (i ? separator : "") + words[i];
  return out;
}

}  // namespace

const std::vector<Separator>& word_separators() {
  static const std::vector<Separator> all = {{'-', "dashes"}, {',', "commas"},       {':', "colons"}, {'+', "plus signs"},
                                             {'/', "slashes"}, {'*', "stars"}, {'_', "underscores"}, {'.', "dots"}};
  return all;
}

std::vector<WordRule> all_word_rules() {
  std::vector<WordRule> rules;
  for (WordOrder o : {WordOrder::keep, WordOrder::reverse, WordOrder::sort})
    for (WordCase c : {WordCase::keep, WordCase::upper, WordCase::capitalize})
      for (int s = 0; s < static_cast<int>(word_separators().size()); ++s) rules.push_back({o, c, s});
  return rules;
}

std::string word_program(const WordRule& rule, CodeBug bug) {
  std::string code = "```python\n";
  code += bug == CodeBug::missing_split ? "words = input()\n" : "words = input().split()\n";
  if (rule.order == WordOrder::reverse) code += "words = words[::-1]\n";
  if (rule.order == WordOrder::sort) code += "words = sorted(words)\n";
  if (rule.letter_case == WordCase::upper) code += "words = [w.upper() for w in words]\n";
  if (rule.letter_case == WordCase::capitalize) code += "words = [w.capitalize() for w in words]\n";
  const std::string sep(1, word_separators().at(static_cast<std::size_t>(rule.separator)).symbol);
  code += "print('" + sep + "'.join(" + (bug == CodeBug::undefined_name ? "word" : "words") + "))\n";
  return code + "```";
}

std::string apply_word_rule(const WordRule& rule, const std::vector<std::string>& input) {
  std::vector<std::string> words = input;
  if (rule.order == WordOrder::reverse) std::reverse(words.begin(), words.end());
  if (rule.order == WordOrder::sort) std::sort(words.begin(), words.end());
  for (auto& w : words) {
    if (rule.letter_case == WordCase::upper) {
      for (auto& ch : w) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    } else if (rule.letter_case == WordCase::capitalize && !w.empty()) {
      // Python's str.capitalize: first letter upper, the rest lower.
      for (auto& ch : w) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    }
  }
  return join_words(words, std::string(1, word_separators().at(static_cast<std::size_t>(rule.separator)).symbol));
}

std::string CodeTask::id() const {
  return std::string("words-") + order_id(rule.order) + "-" + case_id(rule.letter_case) + "-" +
         separator_id(rule.separator) + "-" + std::to_string(variant);
}

std::string CodeTask::prompt() const {
  static const char* orders[] = {"keeps them in their order", "reverses their order", "sorts them alphabetically"};
  static const char* cases[] = {"leaves every word as it is", "makes every word upper case", "capitalizes every word"};
  return std::string("Write a Python program that reads a line of words from standard input, ") +
         orders[static_cast<int>(rule.order)] + ", " + cases[static_cast<int>(rule.letter_case)] +
         ", and prints them joined by " + word_separators().at(static_cast<std::size_t>(rule.separator)).name +
         ". Answer with the program in a ```python code block.";
}

tasks::Task CodeTask::to_task() const {
  tasks::Task task;
  task.id = id();
  task.domain = "code";
  task.prompt = prompt();
  for (const auto& words : tests) {
    tasks::TestCase t;
    t.input = join_words(words, " ") + "\n";
    t.output = apply_word_rule(rule, words) + "\n";
    t.type = tasks::TestType::stdin_io;
    task.tests.push_back(std::move(t));
  }
  task.metadata = {{"source", "distil-demo-code"},
                   {"order", order_id(rule.order)},
                   {"case", case_id(rule.letter_case)},
                   {"separator", std::string(1, word_separators().at(static_cast<std::size_t>(rule.separator)).symbol)},
                   {"reference_solution", word_program(rule)}};
  return task;
}

CodeTaskPools make_code_pools(const CodeSplitSpec& spec) {
  if (!(spec.heldout_fraction > 0.0 && spec.heldout_fraction < 1.0))
    throw std::invalid_argument("heldout_fraction: must be strictly between 0 and 1");
  if (spec.variants_per_rule < 1 || spec.variants_per_rule > 10000)
    throw std::invalid_argument("variants_per_rule: must be in [1, 10000]");
  const auto rules = all_word_rules();
  std::vector<std::pair<uint64_t, WordRule>> ranked;
  for (const auto& r : rules) ranked.push_back({splitmix64(rule_key(r) ^ splitmix64(spec.seed ^ 0xc0de)), r});
  // Held out: the rules whose hash falls below the fraction of the range, at least one and never all.
  const auto threshold = static_cast<uint64_t>(spec.heldout_fraction * 18446744073709551615.0);
  std::size_t heldout_rules = 0;
  for (const auto& [h, r] : ranked) heldout_rules += h < threshold;
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  heldout_rules = std::clamp<std::size_t>(heldout_rules, 1, ranked.size() - 1);
  CodeTaskPools pools;
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    const WordRule& rule = ranked[i].second;
    for (int v = 0; v < spec.variants_per_rule; ++v) {
      CodeTask task;
      task.rule = rule;
      task.variant = v;
      task.tests = make_tests(splitmix64(rule_key(rule) * 1000003ULL + static_cast<uint64_t>(v) + splitmix64(spec.seed)));
      (i < heldout_rules ? pools.heldout : pools.train).push_back(std::move(task));
    }
  }
  // A stable order independent of the hash ranking: by rule, then variant.
  auto by_id = [](const CodeTask& a, const CodeTask& b) { return a.id() < b.id(); };
  std::sort(pools.train.begin(), pools.train.end(), by_id);
  std::sort(pools.heldout.begin(), pools.heldout.end(), by_id);
  return pools;
}

std::vector<CodeTask> sample_code_tasks(const std::vector<CodeTask>& pool, std::size_t count, uint64_t seed) {
  return sample_distinct(pool, count, seed, "tasks");
}

void write_code_task_jsonl(const std::filesystem::path& path, const std::vector<CodeTask>& code_tasks) {
  std::vector<tasks::Task> records;
  for (const CodeTask& t : code_tasks) records.push_back(t.to_task());
  write_tasks_jsonl(path, records);
}

WrongProgram plausible_wrong_program(const CodeTask& task, std::mt19937_64& rng) {
  WrongProgram wrong{task.rule, CodeBug::none};
  if (rng() % 5 == 0) {
    wrong.bug = rng() % 5 < 3 ? CodeBug::undefined_name : CodeBug::missing_split;
    return wrong;
  }
  // One factor wrong (70%) or two (30%), each to another of its values.
  const int factors = rng() % 10 < 7 ? 1 : 2;
  int first = static_cast<int>(rng() % 3);
  for (int k = 0; k < factors; ++k) {
    const int which = (first + k) % 3;
    if (which == 0) wrong.rule.order = static_cast<WordOrder>((static_cast<int>(wrong.rule.order) + 1 + rng() % 2) % 3);
    if (which == 1)
      wrong.rule.letter_case = static_cast<WordCase>((static_cast<int>(wrong.rule.letter_case) + 1 + rng() % 2) % 3);
    if (which == 2) {
      const int n = static_cast<int>(word_separators().size());
      wrong.rule.separator = (wrong.rule.separator + 1 + static_cast<int>(rng() % (n - 1))) % n;
    }
  }
  return wrong;
}

}  // namespace distil::trainer::demo
