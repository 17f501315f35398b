#include "graders/code_support.h"

#include <cctype>
#include <optional>
#include <vector>

#include "graders/text_util.h"

namespace distil::graders::code {

CodeBlock last_code_block(std::string_view s) {
  CodeBlock best;
  // Fences must start a line; walk them in order, pairing openers with closers.
  std::size_t pos = 0;
  bool inside = false;
  std::string fence;
  std::size_t code_start = 0;
  std::string language;
  while (pos <= s.size()) {
    std::size_t line_end = s.find('\n', pos);
    if (line_end == std::string_view::npos) line_end = s.size();
    std::string_view line = s.substr(pos, line_end - pos);
    std::size_t indent = 0;
    while (indent < line.size() && indent < 4 && line[indent] == ' ') ++indent;
    std::string_view rest = line.substr(indent);
    const bool backticks = rest.rfind("```", 0) == 0, tildes = rest.rfind("~~~", 0) == 0;
    if (!inside && (backticks || tildes)) {
      inside = true;
      fence = backticks ? "```" : "~~~";
      language = text::to_lower(text::trim(rest.substr(3)));
      std::size_t space = language.find_first_of(" \t{");
      if (space != std::string::npos) language = language.substr(0, space);
      code_start = line_end + 1;
    } else if (inside && rest.rfind(fence, 0) == 0 && text::trim(rest.substr(3)).empty()) {
      inside = false;
      best.found = true;
      best.unterminated = false;
      best.language = language;
      best.code = code_start <= pos ? std::string(s.substr(code_start, pos - code_start)) : std::string();
    }
    if (line_end >= s.size()) break;
    pos = line_end + 1;
  }
  if (inside && !best.found) best.unterminated = true;
  // A one-line ```print(1)``` block.
  if (!best.found && !inside) {
    std::size_t close = s.rfind("```");
    if (close != std::string_view::npos && close >= 3) {
      std::size_t open = s.rfind("```", close - 1);
      if (open != std::string_view::npos && open + 3 < close) {
        best.found = true;
        best.code = std::string(s.substr(open + 3, close - open - 3));
      }
    }
  }
  return best;
}

sandbox::Language language_for(const std::string& tag, const nlohmann::json& metadata) {
  std::string lang = tag;
  if (lang.empty()) {
    auto it = metadata.find("language");
    if (it != metadata.end() && it->is_string()) lang = text::to_lower(it->get<std::string>());
  }
  if (lang == "cpp" || lang == "c++" || lang == "cc" || lang == "cxx") return sandbox::Language::cpp;
  return sandbox::Language::python;
}

namespace {

std::vector<std::string> split_lines(std::string_view s) {
  std::vector<std::string> lines;
  std::string t = text::trim(s);
  std::size_t pos = 0;
  while (true) {
    std::size_t nl = t.find('\n', pos);
    lines.push_back(text::trim(std::string_view(t).substr(pos, nl == std::string::npos ? std::string::npos : nl - pos)));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return lines;
}

std::vector<std::string> split_tokens(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// An exact decimal as (negative, digits without leading/trailing zeros, exponent): value =
// digits * 10^exponent. "1.50" and "1.5e0" and "15e-1" give the same triple.
struct Decimal {
  bool negative = false;
  std::string digits;
  long exponent = 0;
  bool operator==(const Decimal&) const = default;
};

std::optional<Decimal> parse_decimal(const std::string& s) {
  std::size_t i = 0;
  Decimal d;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) d.negative = s[i++] == '-';
  std::string mantissa;
  long fraction_digits = 0;
  bool seen_digit = false, seen_point = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      mantissa += c;
      seen_digit = true;
      if (seen_point) ++fraction_digits;
    } else if (c == '.' && !seen_point) {
      seen_point = true;
    } else {
      break;
    }
  }
  if (!seen_digit || mantissa.size() > 4000) return std::nullopt;
  long exponent = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    bool neg = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    std::size_t start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) && i - start < 9) exponent = exponent * 10 + (s[i++] - '0');
    if (i == start) return std::nullopt;
    if (neg) exponent = -exponent;
  }
  if (i != s.size()) return std::nullopt;  // "1a", "inf", "nan" are not decimals
  std::size_t lead = mantissa.find_first_not_of('0');
  if (lead == std::string::npos) return Decimal{false, "0", 0};  // every zero is the same zero (-0 == 0)
  mantissa = mantissa.substr(lead);
  d.exponent = exponent - fraction_digits;
  while (mantissa.size() > 1 && mantissa.back() == '0') {
    mantissa.pop_back();
    ++d.exponent;
  }
  d.digits = mantissa;
  return d;
}

}  // namespace

bool stdin_outputs_match(std::string_view actual, std::string_view expected) {
  const auto a = split_lines(actual), e = split_lines(expected);
  if (a.size() != e.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == e[i]) continue;
    const auto at = split_tokens(a[i]), et = split_tokens(e[i]);
    if (at.size() != et.size() || at.empty()) return false;
    for (std::size_t k = 0; k < at.size(); ++k) {
      auto x = parse_decimal(at[k]), y = parse_decimal(et[k]);
      if (!x || !y || !(*x == *y)) return false;
    }
  }
  return true;
}

bool is_python_identifier(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

}  // namespace distil::graders::code
