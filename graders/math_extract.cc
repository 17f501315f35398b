// Finding the final answer in a response: boxed answers, "final answer is", "answer:", the last
// math span, the last number (the order Math-Verify uses), and the equivalence entry point.
#include <algorithm>
#include <cctype>

#include "graders/math_answer.h"
#include "graders/math_value.h"
#include "graders/text_util.h"

namespace distil::graders::math {
namespace {

constexpr std::size_t kMaxParseAttempts = 48;

bool starts_with(std::string_view s, std::size_t pos, std::string_view prefix) {
  return s.size() >= pos + prefix.size() && s.compare(pos, prefix.size(), prefix) == 0;
}
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

struct Span {
  std::size_t start = 0, end = 0;
  std::string content;
};

// ---- LaTeX math spans ----------------------------------------------------------------------

std::optional<Span> math_span_at(std::string_view s, std::size_t i) {
  if (i > 0 && s[i - 1] == '\\') return std::nullopt;
  if (starts_with(s, i, "$$")) {
    std::size_t close = i + 2;
    while (true) {
      close = s.find("$$", close);
      if (close == std::string_view::npos) return std::nullopt;
      if (s[close - 1] != '\\') break;
      ++close;
    }
    if (close == i + 2) return std::nullopt;
    return Span{i, close + 2, std::string(s.substr(i + 2, close - i - 2))};
  }
  if (starts_with(s, i, "\\[")) {
    std::size_t close = s.find("\\]", i + 2);
    if (close == std::string_view::npos || close == i + 2) return std::nullopt;
    return Span{i, close + 2, std::string(s.substr(i + 2, close - i - 2))};
  }
  if (starts_with(s, i, "\\(")) {
    std::size_t close = s.find("\\)", i + 2);
    if (close == std::string_view::npos || close == i + 2) return std::nullopt;
    std::string_view content = s.substr(i + 2, close - i - 2);
    if (content.find('\n') != std::string_view::npos) return std::nullopt;
    return Span{i, close + 2, std::string(content)};
  }
  if (s[i] == '$') {
    if (i > 0 && is_digit(s[i - 1])) return std::nullopt;
    std::size_t j = i + 1;
    while (j < s.size() && s[j] != '\n') {
      if (s[j] == '\\' && j + 1 < s.size() && s[j + 1] == '$') {
        j += 2;
        continue;
      }
      if (s[j] == '$') break;
      ++j;
    }
    if (j >= s.size() || s[j] != '$' || j == i + 1) return std::nullopt;
    return Span{i, j + 1, std::string(s.substr(i + 1, j - i - 1))};
  }
  // A bare "\frac{3}{4}" outside math mode.
  std::size_t k = i;
  if (s[k] == '-') ++k;
  if (starts_with(s, k, "\\frac{")) {
    auto simple_number = [&](std::size_t p, std::size_t& end) {
      std::size_t q = p;
      if (q < s.size() && s[q] == '-') ++q;
      std::size_t digits = q;
      while (q < s.size() && is_digit(s[q])) ++q;
      if (q == digits) return false;
      if (q + 1 < s.size() && (s[q] == '.' || s[q] == ',') && is_digit(s[q + 1])) {
        ++q;
        while (q < s.size() && is_digit(s[q])) ++q;
      }
      end = q;
      return true;
    };
    std::size_t p = k + 6, e1 = 0, e2 = 0;
    if (simple_number(p, e1) && e1 < s.size() && s[e1] == '}' && e1 + 1 < s.size() && s[e1 + 1] == '{' &&
        simple_number(e1 + 2, e2) && e2 < s.size() && s[e2] == '}') {
      return Span{i, e2 + 1, std::string(s.substr(i, e2 + 1 - i))};
    }
  }
  return std::nullopt;
}

// "%", "\%", "percent", "pct" right after a span
bool percent_after(std::string_view s, std::size_t& end) {
  std::size_t j = end;
  while (j < s.size() && is_space(s[j])) ++j;
  for (std::string_view p : {"\\%", "%", "percentage", "percent", "Percentage", "Percent", "pct", "Pct"}) {
    if (starts_with(s, j, p)) {
      end = j + p.size();
      return true;
    }
  }
  return false;
}

// Math spans joined by ",", "and", "or" ("$1$, $2$ and $3$") become one list candidate.
struct SpanGroup {
  std::size_t start = 0, end = 0;
  std::vector<std::string> contents;
  bool percent = false;
};

std::vector<SpanGroup> math_span_groups(std::string_view s, std::size_t from = 0, std::size_t limit = std::string_view::npos,
                                        bool first_only = false) {
  std::vector<SpanGroup> groups;
  std::size_t i = from;
  const std::size_t stop = std::min(limit, s.size());
  while (i < stop) {
    char c = s[i];
    if (c != '$' && c != '\\' && c != '-') {
      ++i;
      continue;
    }
    auto span = math_span_at(s, i);
    if (!span) {
      ++i;
      continue;
    }
    SpanGroup group{span->start, span->end, {span->content}, false};
    group.percent = percent_after(s, group.end);
    // connectors
    while (group.contents.size() < 6) {
      std::size_t j = group.end;
      while (j < s.size() && is_space(s[j])) ++j;
      std::size_t k = j;
      if (k < s.size() && s[k] == ',') ++k;
      std::size_t before_words = k;
      while (k < s.size() && is_space(s[k])) ++k;
      if (starts_with(s, k, "and")) k += 3;
      else if (starts_with(s, k, "or")) k += 2;
      else if (k == before_words && before_words == j) break;  // no connector at all
      while (k < s.size() && is_space(s[k])) ++k;
      auto next = k < s.size() ? math_span_at(s, k) : std::nullopt;
      if (!next) break;
      group.contents.push_back(next->content);
      group.end = next->end;
      group.percent = percent_after(s, group.end) || group.percent;
    }
    groups.push_back(group);
    if (first_only) break;
    i = group.end;
  }
  return groups;
}

// ---- \boxed{} ---------------------------------------------------------------------------------

struct Box {
  std::size_t start, end;
  std::string content;
};

std::vector<Box> all_boxes(std::string_view s) {
  std::vector<Box> boxes;
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t a = s.find("\\boxed", i), b = s.find("\\fbox", i);
    std::size_t at = std::min(a, b);
    if (at == std::string_view::npos) break;
    std::size_t j = at + (at == a ? 6 : 5);
    while (j < s.size() && s[j] == ' ') ++j;
    if (j < s.size() && s[j] == '{') {
      int depth = 0;
      std::size_t k = j;
      for (; k < s.size(); ++k) {
        if (s[k] == '\\' && k + 1 < s.size() && (s[k + 1] == '{' || s[k + 1] == '}')) {
          ++k;
          continue;
        }
        if (s[k] == '{') ++depth;
        else if (s[k] == '}' && --depth == 0) break;
      }
      if (k < s.size()) {
        boxes.push_back({at, k + 1, std::string(s.substr(j + 1, k - j - 1))});
        i = k + 1;
        continue;
      }
    }
    i = j;
  }
  return boxes;
}

// Text between two boxes that still reads as "the same answer": "and", ",", "\quad", a few words.
bool boxes_connected(std::string_view gap) {
  std::string g(gap);
  for (std::string_view noise : {"\\text{", "\\mathrm{", "\\quad", "\\qquad", "\\[", "\\]", "\\(", "\\)", "\\\\", "$", "{", "}",
                                 ",", ";", ".", "\\,", "\\;", "\\ ", ":", "+"}) {
    g = text::replace_all(g, noise, " ");
  }
  int words = 0;
  bool in_word = false;
  std::string word;
  auto finish = [&] {
    if (!word.empty()) {
      std::string lw = text::to_lower(word);
      if (lw != "and" && lw != "or") ++words;
    }
    word.clear();
  };
  for (char c : g) {
    if (is_space(c)) {
      if (in_word) finish();
      in_word = false;
    } else {
      in_word = true;
      word += c;
    }
  }
  finish();
  return words <= 4;
}

// ---- plain numbers and expressions ----------------------------------------------------------

bool expr_char(char c) {
  return is_digit(c) || c == '.' || c == ' ' || c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '(' || c == ')';
}
bool expr_operator(char c) { return c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '(' || c == ')'; }

bool suffix_ok(std::string_view s, std::size_t end) {
  if (end >= s.size()) return true;
  char c = s[end];
  return c == '.' || c == ',' || c == ':' || is_space(c) || c == ')' || c == '$';
}

struct NumberMatch {
  std::size_t start, end, value_start;
  std::string text;  // canonical text to parse
  bool percent = false;
  bool expression = false;
};

// A number in the forms "1,234.5", "1 234", "12,5" (decimal comma), ".5", "-3", at `i`.
std::optional<NumberMatch> number_at(std::string_view s, std::size_t i) {
  std::size_t p = i;
  bool negative = false;
  if (p < s.size() && s[p] == '-') {
    negative = true;
    ++p;
  }
  std::string integer, decimal;
  std::size_t end = p;
  // thousands groups
  if (p < s.size() && is_digit(s[p]) && s[p] != '0') {
    std::size_t q = p;
    while (q < s.size() && is_digit(s[q]) && q - p < 3) ++q;
    std::size_t lead = q;
    int groups = 0;
    std::size_t r = q;
    while (r + 3 < s.size() + 0 && r < s.size() && (s[r] == ',' || s[r] == ' ') && r + 3 < s.size() + 1 &&
           r + 3 <= s.size() - 0 && is_digit(s[r + 1]) && r + 3 < s.size() + 0 && is_digit(s[r + 2]) && is_digit(s[r + 3]) &&
           (r + 4 >= s.size() || !is_digit(s[r + 4]))) {
      r += 4;
      ++groups;
    }
    if (groups > 0 && (lead - p) <= 3 && (lead >= s.size() || !is_digit(s[lead]))) {
      for (std::size_t k = p; k < r; ++k) {
        if (is_digit(s[k])) integer += s[k];
      }
      end = r;
      if (end + 1 < s.size() && s[end] == '.' && is_digit(s[end + 1])) {
        std::size_t d = end + 1;
        while (d < s.size() && is_digit(s[d])) ++d;
        decimal = std::string(s.substr(end, d - end));
        end = d;
      }
    }
  }
  if (integer.empty()) {
    std::size_t q = p;
    while (q < s.size() && is_digit(s[q])) ++q;
    if (q > p) {
      integer = std::string(s.substr(p, q - p));
      end = q;
      if (q + 1 < s.size() && (s[q] == '.' || s[q] == ',') && is_digit(s[q + 1])) {
        std::size_t d = q + 1;
        while (d < s.size() && is_digit(s[d])) ++d;
        decimal = "." + std::string(s.substr(q + 1, d - q - 1));
        end = d;
      }
    } else if (!negative && p + 1 < s.size() && s[p] == '.' && is_digit(s[p + 1])) {
      std::size_t d = p + 1;
      while (d < s.size() && is_digit(s[d])) ++d;
      decimal = std::string(s.substr(p, d - p));
      end = d;
    } else {
      return std::nullopt;
    }
  }
  if (integer.size() + decimal.size() > 200) return std::nullopt;
  while (integer.size() > 1 && integer[0] == '0') integer.erase(0, 1);
  if (integer.empty()) integer = "0";
  NumberMatch m{i, end, i, (negative ? "-" : "") + integer + decimal, false, false};
  std::size_t after = end;
  while (after < s.size() && is_space(s[after])) ++after;
  for (std::string_view pct : {"%", "percentage", "Percentage", "percent", "Percent", "pct", "Pct"}) {
    if (starts_with(s, after, pct)) {
      m.percent = true;
      m.end = after + pct.size();
      break;
    }
  }
  return m;
}

// "10/9", "(1+2)*3": digits and operators with at least one operator, at `i`.
std::optional<NumberMatch> expression_at(std::string_view s, std::size_t i) {
  std::size_t p = i;
  if (p < s.size() && s[p] == '-') ++p;
  if (p < s.size() && s[p] == '(') ++p;
  if (p < s.size() && s[p] == '-') ++p;
  if (p >= s.size() || !is_digit(s[p])) return std::nullopt;
  std::size_t end = p;
  while (end < s.size() && expr_char(s[end]) && end - i < 200) ++end;
  // back off to an end the suffix rule accepts, with an operator after the first digit
  while (end > p) {
    std::string_view body = s.substr(p, end - p);
    bool has_op = std::any_of(body.begin() + 1, body.end(), expr_operator) || std::any_of(body.begin(), body.end(), [](char c) {
                    return c == '/' || c == '*' || c == '^' || c == '+';
                  });
    if (has_op && suffix_ok(s, end) && !is_space(s[end - 1]) && s[end - 1] != '.') {
      std::string text(s.substr(i, end - i));
      // the last character must be a digit or ')' to be an expression
      char last = text.back();
      if (is_digit(last) || last == ')') {
        int balance = 0;
        bool ok = true;
        for (char c : text) {
          balance += c == '(' ? 1 : c == ')' ? -1 : 0;
          ok &= balance >= 0;
        }
        if (ok && balance == 0) return NumberMatch{i, end, i, text, false, true};
      }
    }
    --end;
  }
  return std::nullopt;
}

bool anchor_before(std::string_view s, std::size_t i) {
  if (i == 0) return true;
  char c = s[i - 1];
  return is_space(c) || c == '=' || c == '*';
}

std::size_t skip_currency(std::string_view s, std::size_t i) {
  for (std::string_view cur : {"$", "€", "£", "¥", "₹", "₽", "₩"}) {
    if (starts_with(s, i, cur)) return i + cur.size();
  }
  return i;
}

std::vector<NumberMatch> numbers_in(std::string_view s, std::size_t from = 0, std::size_t limit = std::string_view::npos) {
  std::vector<NumberMatch> out;
  const std::size_t stop = std::min(limit, s.size());
  for (std::size_t i = from; i < stop; ++i) {
    if (!anchor_before(s, i)) continue;
    std::size_t p = i;
    if (starts_with(s, p, "**")) p += 2;
    if (auto e = expression_at(s, p)) {
      out.push_back(*e);
      continue;  // a number at the same anchor is shorter and ends earlier
    }
    std::size_t q = skip_currency(s, p);
    if (auto n = number_at(s, q)) out.push_back(*n);
  }
  return out;
}

std::size_t find_ci(std::string_view haystack_lower, std::string_view needle, std::size_t from) {
  return haystack_lower.find(needle, from);
}

}  // namespace

std::vector<Candidate> extract_candidates(std::string_view s, const ExtractTargets& targets) {
  std::vector<Candidate> out;
  const std::string lower = text::to_lower(s);
  auto add_group = [&](const SpanGroup& g, std::size_t priority, const std::string& source) {
    std::string joined;
    for (const auto& c : g.contents) joined += (joined.empty() ? "" : ", ") + c;
    out.push_back({joined, true, g.percent, source, priority, g.end, g.start});
    if (g.contents.size() > 1) out.push_back({g.contents[0], true, g.percent, source, priority, g.end - 1, g.start});
  };
  auto add_number = [&](const NumberMatch& n, std::size_t priority, const std::string& source) {
    out.push_back({n.text, false, n.percent, source, priority, n.end, n.start});
  };

  if (targets.latex) {
    // Priority 0: \boxed{}; neighbouring boxes joined by short connectors form one answer.
    auto boxes = all_boxes(s);
    for (std::size_t i = 0; i < boxes.size();) {
      std::size_t j = i;
      while (j + 1 < boxes.size() && j - i < 16 && boxes_connected(s.substr(boxes[j].end, boxes[j + 1].start - boxes[j].end))) ++j;
      std::string joined;
      for (std::size_t k = i; k <= j; ++k) joined += (joined.empty() ? "" : ", ") + boxes[k].content;
      std::size_t end = boxes[j].end;
      std::size_t after = end;
      while (after < s.size() && (s[after] == '$' || s[after] == '}' || is_space(s[after]))) ++after;
      bool percent = percent_after(s, after);
      out.push_back({joined, true, percent, "boxed", 0, boxes[j].end, boxes[i].start});
      i = j + 1;
    }
  }
  // "final answer is X" (0 with the "I hope" of the Minerva prompt, 50 without)
  for (std::size_t at = find_ci(lower, "final answer", 0); at != std::string::npos; at = find_ci(lower, "final answer", at + 1)) {
    std::size_t is = lower.find("is", at + 12);
    if (is == std::string::npos || is - at > 112) continue;
    std::size_t p = is + 2;
    if (p < s.size() && s[p] == ':') ++p;
    while (p < s.size() && is_space(s[p])) ++p;
    std::size_t hope = lower.find("i hope", p);
    bool hoped = hope != std::string::npos && hope < p + 400;
    if (targets.latex) {
      auto groups = math_span_groups(s, p, p + 1, true);
      if (!groups.empty()) add_group(groups[0], hoped ? 0 : 50, "final_answer");
    }
    if (targets.expr && p > 0) {
      std::size_t q = skip_currency(s, p);
      if (auto e = expression_at(s, q)) add_number(*e, hoped ? 0 : 50, "final_answer");
      else if (auto n = number_at(s, q)) add_number(*n, hoped ? 0 : 50, "final_answer");
    }
  }
  // "answer: X" (100) and "answer ... X" (200)
  for (std::size_t at = find_ci(lower, "answer", 0); at != std::string::npos; at = find_ci(lower, "answer", at + 1)) {
    std::size_t p = at + 6;
    const bool colon = p < s.size() && s[p] == ':';
    const std::size_t priority = colon ? 100 : 200;
    if (targets.latex) {
      auto groups = math_span_groups(s, p, p + 51, true);
      if (!groups.empty()) add_group(groups[0], priority, "answer");
    }
    if (targets.expr) {
      // after the last "=" within 100 characters, else the first number within 50
      std::size_t window_end = std::min(s.size(), p + 100);
      std::size_t eq = std::string::npos;
      for (std::size_t k = p; k < window_end; ++k) {
        if (s[k] == '=') eq = k;
      }
      std::vector<NumberMatch> nums;
      if (eq != std::string::npos) {
        std::size_t q = eq + 1;
        while (q < s.size() && is_space(s[q])) ++q;
        if (auto e = expression_at(s, q)) nums.push_back(*e);
        else if (auto n = number_at(s, skip_currency(s, q))) nums.push_back(*n);
      }
      if (nums.empty()) {
        auto found = numbers_in(s, p, p + 51);
        if (!found.empty()) nums.push_back(found.front());
      }
      for (const auto& n : nums) {
        std::size_t after = n.end;
        while (after < s.size() && is_space(s[after])) ++after;
        if (after < s.size() && s[after] == '=') continue;  // "answer 2 = ..." is a step, not the answer
        add_number(n, priority, "answer");
      }
    }
  }
  // Priority 300: every math span and every number; the rightmost wins.
  if (targets.latex) {
    for (const auto& g : math_span_groups(s)) add_group(g, 300, "latex");
  }
  if (targets.expr) {
    for (const auto& n : numbers_in(s)) add_number(n, 300, "number");
  }
  std::stable_sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
    if (a.priority != b.priority) return a.priority < b.priority;
    return a.end > b.end;
  });
  return out;
}

namespace {

Answer make_answer(const Candidate& c) {
  Answer a;
  a.text = c.text;
  a.source = c.source;
  a.normalized = normalize_for_string_compare(c.text);
  if (auto v = parse_latex(c.text, !c.latex)) {
    std::lock_guard lock(ginac_mutex());
    auto parsed = std::make_shared<ParsedAnswer>();
    parsed->value = std::move(*v);
    if (c.percent && parsed->value.kind == Value::Kind::scalar && !parsed->value.percent) {
      parsed->value.before_percent = parsed->value.ex;
      parsed->value.ex = parsed->value.ex / 100;
      parsed->value.percent = true;
    }
    a.parsed = std::move(parsed);
  }
  return a;
}

}  // namespace

std::vector<Answer> extract_answers(std::string_view s, const ExtractTargets& targets) {
  std::lock_guard lock(ginac_mutex());
  std::vector<Answer> answers;
  const auto candidates = extract_candidates(s, targets);
  if (candidates.empty()) return answers;
  std::size_t attempts = 0;
  std::vector<std::pair<std::size_t, std::size_t>> failed_latex;  // spans whose numbers do not count
  for (const auto& c : candidates) {
    if (!c.latex && std::any_of(failed_latex.begin(), failed_latex.end(), [&](const auto& span) {
          return c.start < span.second && c.end > span.first;
        }))
      continue;  // a number inside a formula we could not read is not the answer
    if (++attempts > kMaxParseAttempts) break;
    Answer a = make_answer(c);
    if (a.parsed) {
      answers.push_back(std::move(a));
      break;
    }
    if (c.latex) failed_latex.emplace_back(c.start, c.end);
  }
  // The first candidate's text also takes part as a string (for answers no parser reads).
  Answer fallback;
  fallback.text = candidates.front().text;
  fallback.source = candidates.front().source;
  fallback.normalized = normalize_for_string_compare(fallback.text);
  if (answers.empty() || answers.front().text != fallback.text) answers.push_back(std::move(fallback));
  return answers;
}

Answer parse_reference(std::string_view latex) {
  std::lock_guard lock(ginac_mutex());
  std::string s = text::trim(latex);
  bool boxed = false;
  std::string inner = text::last_boxed(s, &boxed);
  if (boxed) s = inner;
  Candidate c{s, true, false, "reference", 0, 0, 0};
  return make_answer(c);
}

bool equivalent(const std::vector<Answer>& gold, const std::vector<Answer>& predicted, const CompareOptions& options) {
  std::lock_guard lock(ginac_mutex());
  for (const auto& g : gold) {
    for (const auto& p : predicted) {
      if (!g.normalized.empty() && g.normalized == p.normalized) return true;
      if (g.parsed && p.parsed && values_equal(g.parsed->value, p.parsed->value, options)) return true;
    }
  }
  return false;
}

}  // namespace distil::graders::math
