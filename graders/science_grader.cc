// Science answers: multiple choice, true/false and yes/no, numbers with units, short text.
#include <cctype>
#include <cmath>
#include <algorithm>
#include <optional>
#include <sstream>
#include <vector>

#include "graders/builtin_graders.h"
#include "graders/text_util.h"

namespace distil::graders {
namespace {

enum class AnswerKind { choice, boolean, numeric, text };

// Parses a leading number ("-1.5e3", "6.02 x 10^23", "3\times10^{8}") and returns the value and
// the rest of the string (the unit). nullopt if the text does not start with a number.
std::optional<std::pair<double, std::string>> parse_quantity(std::string s, std::size_t* number_chars = nullptr) {
  for (std::string_view noise : {"$", "\\,", "{,}", "\\!"}) {
    if (s.find(noise) != std::string::npos) s = text::replace_all(s, noise, "");
  }
  if (s.find_first_not_of(' ') != 0) s = text::trim(s);
  std::size_t i = 0;
  std::string number;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) number += s[i++];
  bool digits = false;
  auto thousands_comma = [&](std::size_t k) {  // "6,022" but not "1,5" or "3, 4"
    if (!digits || k + 3 >= s.size() + 0) return false;
    for (std::size_t d = 1; d <= 3; ++d) {
      if (k + d >= s.size() || !std::isdigit(static_cast<unsigned char>(s[k + d]))) return false;
    }
    return k + 4 >= s.size() || !std::isdigit(static_cast<unsigned char>(s[k + 4]));
  };
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.' ||
                          (s[i] == ',' && thousands_comma(i)))) {
    if (s[i] != ',') number += s[i];
    digits |= std::isdigit(static_cast<unsigned char>(s[i])) != 0;
    ++i;
  }
  if (!digits) return std::nullopt;
  if (i + 1 < s.size() && (s[i] == 'e' || s[i] == 'E') &&
      (std::isdigit(static_cast<unsigned char>(s[i + 1])) || s[i + 1] == '-' || s[i + 1] == '+')) {
    number += 'e';
    ++i;
    if (s[i] == '-' || s[i] == '+') number += s[i++];
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) number += s[i++];
  }
  double value = 0;
  try {
    std::size_t used = 0;
    value = std::stod(number, &used);
    if (used != number.size()) return std::nullopt;
  } catch (...) {
    return std::nullopt;
  }
  // "x 10^23", "\times 10^{23}", "* 10^23", "· 10^23"
  std::size_t j = i;
  while (j < s.size() && s[j] == ' ') ++j;
  for (std::string_view times : {"\\times", "×", "x", "*", "\\cdot", "·"}) {
    if (s.compare(j, times.size(), times) == 0) {
      std::size_t k = j + times.size();
      while (k < s.size() && s[k] == ' ') ++k;
      if (s.compare(k, 3, "10^") == 0) {
        k += 3;
        bool brace = k < s.size() && s[k] == '{';
        if (brace) ++k;
        std::string exponent;
        if (k < s.size() && (s[k] == '-' || s[k] == '+')) exponent += s[k++];
        while (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) exponent += s[k++];
        if (brace && k < s.size() && s[k] == '}') ++k;
        if (!exponent.empty() && exponent != "-" && exponent != "+") {
          int e = std::clamp(std::atoi(exponent.c_str()), -400, 400);
          value *= std::pow(10.0, e);
          i = k;
        }
      }
      break;
    }
  }
  if (number_chars) *number_chars = i;
  std::string unit = text::trim(s.substr(i));
  unit = text::replace_all(unit, "\\text{", "");
  unit = text::replace_all(unit, "\\mathrm{", "");
  unit = text::replace_all(unit, "}", "");
  unit = text::replace_all(unit, "{", "");
  unit = text::replace_all(unit, "~", "");
  unit = text::replace_all(unit, " ", "");
  while (!unit.empty() && (unit.back() == '.' || unit.back() == ',')) unit.pop_back();
  return std::make_pair(value, unit);
}

// Scale that converts `from` to `to` when they differ only by an SI prefix ("km" -> "m": 1000).
std::optional<double> prefix_scale(const std::string& from, const std::string& to) {
  static const std::vector<std::pair<std::string, double>> prefixes = {
      {"p", 1e-12}, {"n", 1e-9}, {"u", 1e-6}, {"µ", 1e-6}, {"μ", 1e-6}, {"m", 1e-3},
      {"c", 1e-2},  {"d", 1e-1}, {"k", 1e3},  {"M", 1e6},  {"G", 1e9},  {"T", 1e12}};
  auto factor = [](const std::string& unit, const std::string& base) -> std::optional<double> {
    if (unit == base) return 1.0;
    if (unit.size() <= base.size() || unit.compare(unit.size() - base.size(), base.size(), base) != 0) return std::nullopt;
    const std::string prefix = unit.substr(0, unit.size() - base.size());
    for (const auto& [p, f] : prefixes) {
      if (p == prefix) return f;
    }
    return std::nullopt;
  };
  // Try each suffix of `to` as the shared base unit ("km" vs "mm": base "m").
  for (std::size_t cut = 0; cut < to.size(); ++cut) {
    std::string base = to.substr(cut);
    auto a = factor(from, base), b = factor(to, base);
    if (a && b) return *a / *b;
  }
  return std::nullopt;
}

std::string normalise_text(std::string s) {
  s = text::to_lower(text::replace_all(text::replace_all(s, "\\text{", ""), "\\mathrm{", ""));
  std::string out;
  bool space = false;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || u >= 0x80 || c == '.' || c == '-' || c == '+' || c == '/' || c == '^') {
      if (space && !out.empty()) out += ' ';
      out += c;
      space = false;
    } else {
      space = true;
    }
  }
  while (!out.empty() && out.back() == '.') out.pop_back();
  for (std::string_view article : {"the ", "a ", "an "}) {
    if (out.rfind(article, 0) == 0) out = out.substr(article.size());
  }
  return out;
}

class ScienceGrader final : public Grader {
 public:
  std::string name() const override { return "science"; }
  std::string description() const override {
    return "Science answers: multiple choice (A, B, ...), true/false and yes/no, numbers with relative "
           "tolerance and SI-prefixed units, or exact normalised text.";
  }

  GradeResult grade(const tasks::Task& task, const std::string& response, const GradeOptions& options,
                    GradeContext&) const override {
    if (!task.answer) throw tasks::TaskError("answer", "the science grader needs a reference answer");
    GradeResult result;
    bool unterminated = false;
    const std::string body = text::strip_think(response, &unterminated);
    const std::string reference = text::trim(*task.answer);
    const AnswerKind kind = classify(task, reference);
    result.details["answer_kind"] = kind_name(kind);
    if (text::trim(body).empty()) {
      result.verdict = "format_error";
      result.feedback = unterminated
                            ? "The response ended inside its <think> block, so it never stated a final answer. "
                              "Finish reasoning earlier and state the answer."
                            : "The response is empty: no final answer was found.";
      return result;
    }
    std::optional<std::string> extracted;
    bool correct = false;
    std::string expected_shown = reference;
    switch (kind) {
      case AnswerKind::choice: {
        const int count = task.choices.empty() ? 10 : static_cast<int>(task.choices.size());
        const char expected = reference_label(task, reference);
        expected_shown = std::string(1, expected);
        if (auto letter = extract_choice(body, task, count)) {
          extracted = std::string(1, *letter);
          correct = *letter == expected;
        }
        break;
      }
      case AnswerKind::boolean: {
        if (auto value = extract_boolean(body)) {
          extracted = *value ? "true" : "false";
          correct = *value == is_affirmative(text::to_lower(reference));
        }
        break;
      }
      case AnswerKind::numeric: {
        auto expected = parse_quantity(reference);
        std::string candidate = final_answer_text(body);
        auto got = find_quantity(candidate.empty() ? body : candidate, candidate.empty());
        if (got) {
          extracted = text::trim(candidate.empty() ? format_quantity(*got) : candidate);
          double value = got->first;
          if (!got->second.empty() && !expected->second.empty() && got->second != expected->second) {
            if (auto scale = prefix_scale(got->second, expected->second)) value *= *scale;
            else result.details["unit_mismatch"] = got->second + " vs " + expected->second;
          }
          const double tolerance = options.relative_tolerance * std::max(std::abs(expected->first), 1e-300);
          correct = std::abs(value - expected->first) <= tolerance;
          result.details["value"] = value;
        }
        break;
      }
      case AnswerKind::text: {
        std::string candidate = final_answer_text(body);
        if (candidate.empty()) {
          std::string trimmed = text::trim(body);
          std::size_t nl = trimmed.rfind('\n');
          candidate = nl == std::string::npos ? trimmed : trimmed.substr(nl + 1);
        }
        extracted = text::trim(candidate);
        correct = !extracted->empty() && normalise_text(*extracted) == normalise_text(reference);
        break;
      }
    }
    if (!extracted) {
      result.verdict = "format_error";
      result.feedback = std::string("No final answer could be found in the response. ") + format_hint(kind, task) +
                        (unterminated ? " (The response also ended inside an unfinished <think> block.)" : "");
      return result;
    }
    result.extracted = *extracted;
    result.passed = correct;
    result.reward = correct ? 1.0 : 0.0;
    result.verdict = correct ? "accepted" : "wrong_answer";
    if (correct) {
      result.feedback = "Correct.";
    } else {
      result.feedback = "The final answer \"" + text::truncate_utf8(*extracted, 200) + "\" is incorrect.";
      if (options.reveal_answer) result.feedback += " The correct answer is " + expected_shown + ".";
    }
    result.informative = !correct && options.reveal_answer;
    return result;
  }

 private:
  static const char* kind_name(AnswerKind k) {
    switch (k) {
      case AnswerKind::choice: return "multiple_choice";
      case AnswerKind::boolean: return "boolean";
      case AnswerKind::numeric: return "numeric";
      case AnswerKind::text: return "text";
    }
    return "text";
  }

  static std::string format_hint(AnswerKind kind, const tasks::Task& task) {
    switch (kind) {
      case AnswerKind::choice: {
        char last = static_cast<char>('A' + (task.choices.empty() ? 3 : task.choices.size() - 1));
        return std::string("End with a line such as \"Answer: B\" naming one option (A-") + last + ").";
      }
      case AnswerKind::boolean: return "End with a line such as \"Answer: True\" (or Yes/No).";
      case AnswerKind::numeric: return "End with a line such as \"Answer: 9.8 m/s^2\".";
      case AnswerKind::text: return "End with a line such as \"Answer: <your answer>\".";
    }
    return {};
  }

  static bool is_affirmative(const std::string& lower) { return lower == "true" || lower == "yes"; }

  static AnswerKind classify(const tasks::Task& task, const std::string& reference) {
    if (!task.choices.empty()) return AnswerKind::choice;
    if (reference.size() == 1 && std::isalpha(static_cast<unsigned char>(reference[0]))) return AnswerKind::choice;
    const std::string lower = text::to_lower(reference);
    if (lower == "true" || lower == "false" || lower == "yes" || lower == "no") return AnswerKind::boolean;
    if (parse_quantity(reference)) return AnswerKind::numeric;
    return AnswerKind::text;
  }

  // The reference as a label: "B", "b", "(B)", or the text of one of the choices.
  static char reference_label(const tasks::Task& task, const std::string& reference) {
    std::string r = reference;
    if (r.size() == 3 && r.front() == '(' && r.back() == ')') r = r.substr(1, 1);
    if (r.size() == 1 && std::isalpha(static_cast<unsigned char>(r[0])))
      return static_cast<char>(std::toupper(static_cast<unsigned char>(r[0])));
    for (std::size_t i = 0; i < task.choices.size(); ++i) {
      if (normalise_text(task.choices[i]) == normalise_text(reference)) return static_cast<char>('A' + i);
    }
    throw tasks::TaskError("answer", "\"" + reference + "\" is neither a choice label nor the text of a choice");
  }

  // The explicit final-answer part: <answer> tag, \boxed{}, or "Answer:"/"answer is" line.
  static std::string final_answer_text(const std::string& body) {
    bool found = false;
    std::string s = text::last_tag(body, "answer", &found);
    if (found) return text::trim(s);
    s = text::last_boxed(body, &found);
    if (found) return text::trim(s);
    s = text::after_answer_marker(body, &found);
    if (found) return text::trim(s);
    return {};
  }

  // A label from a short answer text: "B", "(b)", "B.", "B) 42 J", "\text{B}", or a choice's text.
  static std::optional<char> label_from_answer(std::string s, const tasks::Task& task, int count) {
    s = text::replace_all(text::replace_all(s, "\\text{", ""), "\\mathrm{", "");
    std::string cleaned;
    for (char c : s) {
      if (c != '$' && c != '{' && c != '}' && c != '*') cleaned += c;
    }
    cleaned = text::trim(cleaned);
    for (std::string_view prefix : {"option ", "choice ", "Option ", "Choice "}) {
      if (cleaned.rfind(prefix, 0) == 0) cleaned = text::trim(cleaned.substr(prefix.size()));
    }
    auto valid = [&](char c) {
      char u = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      return u >= 'A' && u < 'A' + count ? std::optional<char>(u) : std::nullopt;
    };
    std::size_t start = 0;
    if (!cleaned.empty() && (cleaned[0] == '(' || cleaned[0] == '[')) start = 1;
    if (start < cleaned.size() && std::isalpha(static_cast<unsigned char>(cleaned[start])) &&
        text::word_end(cleaned, start + 1)) {
      if (auto label = valid(cleaned[start])) return label;
    }
    for (std::size_t i = 0; i < task.choices.size(); ++i) {
      if (normalise_text(task.choices[i]) == normalise_text(cleaned)) return static_cast<char>('A' + i);
    }
    return std::nullopt;
  }

  // The last uppercase label standing alone as a word ("A is wrong, so B" -> B), preferring "(X)".
  static std::optional<char> last_standalone_label(const std::string& s, int count) {
    for (std::size_t i = s.size(); i-- > 0;) {
      if (s[i] == ')' && i >= 2 && s[i - 2] == '(') {
        char c = s[i - 1];
        if (c >= 'A' && c < 'A' + count) return c;
      }
    }
    for (std::size_t i = s.size(); i-- > 0;) {
      char c = s[i];
      if (c >= 'A' && c < 'A' + count && text::word_start(s, i) && text::word_end(s, i + 1)) {
        // "A" as an English article at a sentence start ("A force acts...") is not an answer.
        if (c == 'A' && i + 2 < s.size() && s[i + 1] == ' ' && std::islower(static_cast<unsigned char>(s[i + 2]))) continue;
        if (i + 1 < s.size() && s[i + 1] == '\'') continue;  // "I'm"
        return c;
      }
    }
    return std::nullopt;
  }

  static std::optional<char> extract_choice(const std::string& body, const tasks::Task& task, int count) {
    std::string final_text = final_answer_text(body);
    if (!final_text.empty()) {
      // "Answer: A. Actually no, B": a correction inside the answer line means its last label.
      // The first label after the last correction word wins ("B (not A)" stays B: "not" alone
      // negates the label after it rather than correcting towards it).
      const std::string lower = text::to_lower(final_text);
      std::size_t after = std::string::npos;
      for (std::string_view correction : {"actually", "instead", "rather", "no,", "wrong", "incorrect", "not correct",
                                          "not right", "isn't", "mistake"}) {
        for (std::size_t p = lower.find(correction); p != std::string::npos; p = lower.find(correction, p + 1)) {
          if (after == std::string::npos || p + correction.size() > after) after = p + correction.size();
        }
      }
      if (after != std::string::npos) {
        const std::string rest = final_text.substr(after);
        for (std::size_t i = 0; i < rest.size(); ++i) {
          const char c = rest[i];
          if (c >= 'A' && c < 'A' + count && text::word_start(rest, i) && text::word_end(rest, i + 1)) return c;
        }
      }
      if (auto label = label_from_answer(final_text, task, count)) return label;
      if (auto label = last_standalone_label(final_text, count)) return label;
    }
    const std::string trimmed = text::trim(body);
    if (auto label = label_from_answer(trimmed, task, count); label && trimmed.size() <= 4) return label;
    // Only the last paragraph: earlier ones discuss every option.
    std::size_t cut = trimmed.rfind("\n\n");
    std::string tail = cut == std::string::npos ? trimmed : trimmed.substr(cut + 2);
    if (auto label = last_standalone_label(tail, count)) return label;
    return last_standalone_label(trimmed, count);
  }

  static std::optional<bool> last_boolean_word(const std::string& s) {
    const std::string lower = text::to_lower(s);
    std::optional<bool> value;
    std::size_t best = 0;
    for (std::string_view word : {"true", "false", "yes", "no"}) {
      for (std::size_t p = lower.find(word); p != std::string::npos; p = lower.find(word, p + 1)) {
        if (!text::word_start(lower, p) || !text::word_end(lower, p + word.size())) continue;
        if (!value || p >= best) {
          best = p;
          value = word == "true" || word == "yes";
        }
      }
    }
    return value;
  }

  static std::optional<bool> extract_boolean(const std::string& body) {
    std::string final_text = final_answer_text(body);
    if (!final_text.empty()) {
      if (auto v = last_boolean_word(final_text)) return v;
    }
    return last_boolean_word(body);
  }

  // The first quantity of an explicit answer, or the last number anywhere in the text.
  static std::optional<std::pair<double, std::string>> find_quantity(const std::string& s, bool last) {
    std::vector<std::size_t> starts;
    for (std::size_t i = 0; i < s.size(); ++i) {
      const bool digit_start = std::isdigit(static_cast<unsigned char>(s[i])) ||
                               ((s[i] == '-' || s[i] == '.') && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])));
      if (!digit_start || (i > 0 && (std::isalnum(static_cast<unsigned char>(s[i - 1])) || s[i - 1] == '.'))) continue;
      starts.push_back(i);
      if (!last) break;
    }
    // Only the last few candidates matter for "the last number"; parsing them all would make a
    // response full of numbers cost far more than it needs to.
    const std::size_t first = last && starts.size() > 16 ? starts.size() - 16 : 0;
    std::optional<std::pair<double, std::string>> found;
    std::size_t covered_until = 0;
    for (std::size_t k = first; k < starts.size(); ++k) {
      const std::size_t i = starts[k];
      if (i < covered_until) continue;  // "6.0 x 10^23": the 10 and 23 belong to the 6.0
      // A quantity with its unit fits in a short window; a bounded window keeps this linear.
      const std::size_t end = std::min(s.find('\n', i), i + 96);
      std::size_t used = 0;
      if (auto q = parse_quantity(s.substr(i, end - i), &used)) {
        found = q;
        if (!last) return found;
        covered_until = i + used;
      }
    }
    if (found && last) {
      // The unit of a number found in running prose is unreliable ("5 apples and then ...").
      found->second.clear();
    }
    return found;
  }

  static std::string format_quantity(const std::pair<double, std::string>& q) {
    std::ostringstream out;
    out.precision(12);
    out << q.first;
    if (!q.second.empty()) out << ' ' << q.second;
    return out.str();
  }
};

}  // namespace

std::unique_ptr<Grader> make_science_grader() { return std::make_unique<ScienceGrader>(); }

}  // namespace distil::graders
