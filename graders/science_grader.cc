// Science answers: multiple choice, true/false and yes/no, numbers with units, short text.
#include <cctype>
#include <cmath>
#include <algorithm>
#include <optional>
#include <sstream>
#include <vector>

#include "common/reasoning.h"
#include "graders/builtin_graders.h"
#include "graders/feedback_text.h"
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
    const std::string body = common::strip_think(response, &unterminated);
    const std::string reference = text::trim(*task.answer);
    const AnswerKind kind = classify(task, reference);
    result.details["answer_kind"] = kind_name(kind);
    if (science_mode(task, options) == "strict") return grade_strict(task, response, reference, kind, options, result);
    result.details["science_mode"] = "default";
    if (text::trim(body).empty()) {
      result.verdict = "format_error";
      result.feedback = feedback::empty_response(unterminated, format_hint(kind, task));
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
        std::string hedge;
        if (auto letter = extract_choice(body, task, count, &hedge)) {
          extracted = std::string(1, *letter);
          correct = *letter == expected;
        } else if (!hedge.empty()) {
          // "B, C", "B or C": more than one option is no answer, whichever is right.
          result.details["hedged"] = true;
          result.extracted = hedge;
          result.verdict = "wrong_answer";
          result.feedback = "The final answer names more than one option (" + text::truncate_utf8(hedge, 100) +
                            "); exactly one option must be chosen.";
          if (options.reveal_answer) result.feedback += " The correct answer is " + expected_shown + ".";
          result.informative = true;
          return result;
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
                        std::string(unterminated ? feedback::kAlsoUnfinishedThink : "");
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
  static std::string science_mode(const tasks::Task& task, const GradeOptions& options) {
    if (!options.science_mode.empty()) return options.science_mode;
    auto it = task.metadata.find("science_mode");
    if (it == task.metadata.end()) return "default";
    if (!it->is_string() || (*it != "default" && *it != "strict"))
      throw tasks::TaskError("metadata.science_mode", "must be \"default\" or \"strict\"");
    return it->get<std::string>();
  }

  // SDPO's multiple-choice reward, exactly: the text between the last "<answer>" and the first
  // "</answer>" after it (no tag: the whole response; an unclosed tag: everything after it),
  // whitespace stripped at both ends, must equal the reference label, case-sensitively. Other
  // answer kinds compare the same text with the reference answer exactly.
  static GradeResult grade_strict(const tasks::Task& task, const std::string& response, const std::string& reference,
                                  AnswerKind kind, const GradeOptions& options, GradeResult& result) {
    result.details["science_mode"] = "strict";
    const std::string expected = kind == AnswerKind::choice ? std::string(1, reference_label(task, reference)) : reference;
    const std::size_t open = response.rfind("<answer>");
    const bool tagged = open != std::string::npos;
    std::string inside = tagged ? response.substr(open + 8) : response;
    const std::size_t close = inside.find("</answer>");
    if (close != std::string::npos) inside.resize(close);
    const std::string answer = python_strip(inside);
    result.extracted = answer;
    result.passed = answer == expected;
    result.reward = result.passed ? 1.0 : 0.0;
    if (result.passed) {
      result.verdict = "accepted";
      result.feedback = "Correct.";
      result.informative = false;
      return result;
    }
    if (!tagged) {
      result.verdict = "format_error";
      result.feedback = "No <answer>...</answer> tag was found, and the whole response is not an answer. End with "
                        "<answer>X</answer> holding only the " +
                        std::string(kind == AnswerKind::choice ? "option letter" : "answer") + ".";
      result.informative = true;
      return result;
    }
    result.verdict = "wrong_answer";
    result.feedback = "The final answer \"" + text::truncate_utf8(answer, 200) + "\" is incorrect.";
    if (options.reveal_answer) result.feedback += " The correct answer is " + expected + ".";
    result.informative = options.reveal_answer;
    return result;
  }

  // Python's str.strip() on ASCII whitespace and the Unicode spaces a model emits.
  static std::string python_strip(const std::string& s) {
    auto space_at_start = [&](std::size_t i) -> std::size_t {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
      if (s.compare(i, 2, "\xc2\xa0") == 0 || s.compare(i, 2, "\xc2\x85") == 0) return 2;
      for (const char* u : {"\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85",
                            "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8",
                            "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80", "\xe1\x9a\x80"})
        if (s.compare(i, 3, u) == 0) return 3;
      return 0;
    };
    std::size_t b = 0;
    while (b < s.size()) {
      const std::size_t n = space_at_start(b);
      if (!n) break;
      b += n;
    }
    std::size_t e = s.size();
    while (e > b) {
      std::size_t n = 0;
      for (std::size_t len = 1; len <= 3 && len <= e - b && !n; ++len)
        if (space_at_start(e - len) == len) n = len;
      if (!n) break;
      e -= n;
    }
    return s.substr(b, e - b);
  }

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

  // The answer text is a list of two or more different labels and nothing else ("B, C", "(B) or
  // (C)", "B/C", "both B and C", "B and C are correct"): the labels, as written; else nullopt.
  static std::optional<std::string> hedged_labels(const std::string& answer, int count) {
    std::string s;
    for (char c : text::replace_all(text::replace_all(answer, "\\text{", ""), "\\mathrm{", ""))
      if (c != '$' && c != '{' && c != '}' && c != '*' && c != '`') s += c;
    s = text::trim(s);
    const std::string lower = text::to_lower(s);
    std::size_t i = 0;
    auto skip_space = [&] {
      while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    };
    auto skip_word = [&](std::string_view w) {
      if (lower.compare(i, w.size(), w) == 0 && text::word_end(lower, i + w.size())) {
        i += w.size();
        return true;
      }
      return false;
    };
    skip_space();
    for (std::string_view lead : {"both", "options", "choices"}) {
      if (skip_word(lead)) {
        skip_space();
        break;
      }
    }
    std::vector<char> labels;
    while (i < s.size()) {
      const bool open = s[i] == '(' || s[i] == '[';
      std::size_t j = i + (open ? 1 : 0);
      if (j >= s.size() || !std::isalpha(static_cast<unsigned char>(s[j])) || !text::word_end(s, j + 1)) break;
      const char u = static_cast<char>(std::toupper(static_cast<unsigned char>(s[j])));
      if (u < 'A' || u >= 'A' + count) return std::nullopt;
      ++j;
      if (open) {
        if (j >= s.size() || (s[j] != ')' && s[j] != ']')) return std::nullopt;
        ++j;
      } else if (j < s.size() && s[j] == ')') {
        ++j;
      }
      labels.push_back(u);
      i = j;
      skip_space();
      bool separator = false;
      while (i < s.size()) {
        if (s[i] == ',' || s[i] == ';' || s[i] == '/' || s[i] == '&' || s[i] == '+') {
          ++i;
          separator = true;
        } else if (skip_word("and") || skip_word("or")) {
          separator = true;
        } else {
          break;
        }
        skip_space();
      }
      if (!separator) break;
    }
    std::vector<char> distinct = labels;
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    if (distinct.size() < 2) return std::nullopt;
    std::string rest = text::trim(lower.substr(std::min(i, lower.size())));
    while (!rest.empty() && (rest.back() == '.' || rest.back() == '!')) rest.pop_back();
    rest = text::trim(rest);
    if (!rest.empty() && rest != "both" && rest.rfind("are ", 0) != 0 && rest.rfind("both ", 0) != 0) return std::nullopt;
    return text::trim(s.substr(0, std::min(i, s.size())));
  }

  static std::optional<char> extract_choice(const std::string& body, const tasks::Task& task, int count,
                                            std::string* hedge) {
    std::string final_text = final_answer_text(body);
    if (!final_text.empty()) {
      if (auto listed = hedged_labels(final_text, count)) {
        *hedge = *listed;
        return std::nullopt;
      }
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

  // The word before position p (lower case), skipping one intensifier ("not entirely true").
  static bool negated_before(const std::string& lower, std::size_t p) {
    auto previous_word = [&](std::size_t end, std::size_t& start) {
      std::size_t e = end;
      while (e > 0 && std::isspace(static_cast<unsigned char>(lower[e - 1]))) --e;
      std::size_t b = e;
      while (b > 0 && (std::isalpha(static_cast<unsigned char>(lower[b - 1])) || lower[b - 1] == '\'')) --b;
      start = b;
      return lower.substr(b, e - b);
    };
    auto negator = [](const std::string& w) {
      return w == "not" || w == "never" || w == "hardly" || (w.size() > 3 && w.compare(w.size() - 3, 3, "n't") == 0);
    };
    std::size_t start = 0;
    const std::string w1 = previous_word(p, start);
    if (negator(w1)) return true;
    for (std::string_view adverb : {"entirely", "completely", "necessarily", "really", "quite", "always", "strictly",
                                    "exactly", "totally", "wholly", "fully"}) {
      if (w1 == adverb) {
        std::size_t start2 = 0;
        return negator(previous_word(start, start2));
      }
    }
    return false;
  }

  // The last true/false/yes/no word, read with its context: "not true" is false, "not false" true,
  // and "no" in "no doubt", "no question", "no wonder" is not an answer ("Yes, no doubt." is yes).
  static std::optional<bool> last_boolean_word(const std::string& s) {
    const std::string lower = text::to_lower(s);
    std::optional<bool> value;
    std::size_t best = 0;
    for (std::string_view word : {"true", "false", "yes", "no"}) {
      for (std::size_t p = lower.find(word); p != std::string::npos; p = lower.find(word, p + 1)) {
        if (!text::word_start(lower, p) || !text::word_end(lower, p + word.size())) continue;
        if (word == "no") {
          std::size_t q = p + 2;
          while (q < lower.size() && lower[q] == ' ') ++q;
          bool idiom = false;
          for (std::string_view next : {"doubt", "question", "wonder"}) {
            if (lower.compare(q, next.size(), next) == 0 && text::word_end(lower, q + next.size())) idiom = true;
          }
          if (idiom) continue;
        }
        if (!value || p >= best) {
          best = p;
          bool affirmative = word == "true" || word == "yes";
          if (word != "no" && negated_before(lower, p)) affirmative = !affirmative;
          value = affirmative;
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
