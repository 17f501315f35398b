// Normalisation of LaTeX-ish answer text: the surface forms that mean the same thing become one
// form, before parsing (math_parse.cc) or comparing as strings.
#include "graders/math_normalize.h"

#include <cctype>

#include "graders/math_value.h"
#include "graders/text_util.h"

namespace distil::graders::math {
namespace {

std::string replace_word(std::string s, std::string_view word, std::string_view with) {
  std::size_t pos = 0;
  while ((pos = s.find(word, pos)) != std::string::npos) {
    bool left = pos == 0 || !std::isalpha(static_cast<unsigned char>(s[pos - 1]));
    bool right = pos + word.size() >= s.size() || !std::isalpha(static_cast<unsigned char>(s[pos + word.size()]));
    if (left && pos > 0 && s[pos - 1] == '\\') left = false;
    if (left && right) {
      s.replace(pos, word.size(), with);
      pos += with.size();
    } else {
      pos += word.size();
    }
  }
  return s;
}

}  // namespace

std::string normalize_latex(std::string_view in) {
  std::string s;
  s.reserve(in.size());
  // "\\le" from a doubly escaped source means "\le"; "\\" before a non-letter is a row break.
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\\' && i + 2 < in.size() && in[i + 1] == '\\' && std::isalpha(static_cast<unsigned char>(in[i + 2])) &&
        (i == 0 || in[i - 1] != '\\'))
      continue;
    s += in[i];
  }
  // Row breaks "\\" must survive the rewrites below (which know "\ " as a space).
  constexpr char kRowBreak = '\x01';
  for (std::size_t i = 0; i + 1 < s.size(); ++i) {
    if (s[i] == '\\' && s[i + 1] == '\\') {
      s[i] = kRowBreak;
      s.erase(i + 1, 1);
    }
  }
  // Thousands separators written in LaTeX: "11,\!111" and "11{,}111".
  s = text::replace_all(s, ",\\!", "");
  for (std::string_view sep : {"{,}", "{, }"}) {  // "14{,}916", "14 {, }916": one number
    for (std::size_t at = s.find(sep); at != std::string::npos; at = s.find(sep, at)) {
      std::size_t begin = at, end = at + sep.size();
      while (begin > 0 && s[begin - 1] == ' ') --begin;
      while (end < s.size() && s[end] == ' ') ++end;
      s.erase(begin, end - begin);
      at = begin;
    }
  }
  static const std::vector<std::pair<std::string, std::string>> rewrites = {
      {"\\left.", ""}, {"\\right.", ""}, {"\\left", ""}, {"\\right", ""}, {"\\bigl", ""}, {"\\bigr", ""},
      {"\\Bigl", ""}, {"\\Bigr", ""}, {"\\big", ""}, {"\\Big", ""}, {"\\displaystyle", ""},
      {"\\!", ""}, {"\\,", " "}, {"\\;", " "}, {"\\:", " "}, {"\\ ", " "}, {"~", " "},
      {"\\qquad", " "}, {"\\quad", " "},
      {"\\dfrac", "\\frac"}, {"\\tfrac", "\\frac"}, {"\\cfrac", "\\frac"},
      {"^{\\circ}", ""}, {"^\\circ", ""}, {"\\circ", ""}, {"°", ""}, {"^{\\degree}", ""}, {"^\\degree", ""}, {"\\degree", ""},
      {"\\$", ""}, {"\\%", "%"},
      {"\\textnormal", "\\text"}, {"\\textrm", "\\text"}, {"\\textbf", "\\text"}, {"\\textit", "\\text"},
      {"\\mbox", "\\text"}, {"\\textsf", "\\text"}, {"\\texttt", "\\text"},
      {"\\mathbf", ""}, {"\\mathit", ""}, {"\\boldsymbol", ""}, {"\\mathsf", ""},
      {"\\leqslant", "<="}, {"\\geqslant", ">="}, {"\\leq", "<="}, {"\\geq", ">="}, {"\\neq", "!="},
      {"≤", "<="}, {"≥", ">="}, {"≠", "!="}, {"\\lt", "<"}, {"\\gt", ">"}, {"−", "-"}, {"×", "*"}, {"÷", "/"},
      {"\\cdot", "*"}, {"\\times", "*"}, {"\\ast", "*"}, {"\\div", "/"}, {"\\colon", ":"},
      {"\\dots", ""}, {"\\ldots", ""}, {"\\cdots", ""}, {"\\mathbb{R}", "(-\\infty,\\infty)"},
      {"\\varnothing", "\\{\\}"}, {"\\emptyset", "\\{\\}"},
  };
  for (const auto& [from, to] : rewrites) {
    if (s.find(from) != std::string::npos) s = text::replace_all(s, from, to);
  }
  // "\le" / "\ge" / "\ne" only as whole commands (not the prefix of "\left", "\neq").
  s = replace_word(std::move(s), "\\le", "<=");
  s = replace_word(std::move(s), "\\ge", ">=");
  s = replace_word(std::move(s), "\\ne", "!=");
  // \text{and}, \text{ or } and bare "and"/"or" separate list items.
  for (std::string_view sep : {"\\text{and}", "\\text{ and }", "\\text{ and}", "\\text{and }", "\\text{or}",
                               "\\text{ or }", "\\text{ or}", "\\text{or }", "\\text{, and }", "\\text{, }"}) {
    if (s.find(sep) != std::string::npos) s = text::replace_all(s, sep, ",");
  }
  s = replace_word(std::move(s), "and", ",");
  s = replace_word(std::move(s), "or", ",");
  // "\approx": "x = 1/3 \approx 0.33" keeps the exact part; "x \approx 11" means x = 11.
  for (std::size_t at = s.find("\\approx"); at != std::string::npos; at = s.find("\\approx")) {
    std::size_t item_start = s.rfind(',', at);
    item_start = item_start == std::string::npos ? 0 : item_start + 1;
    if (s.find('=', item_start) < at) {
      std::size_t item_end = s.find(',', at);
      s.erase(at, item_end == std::string::npos ? std::string::npos : item_end - at);
    } else {
      s.replace(at, 7, "=");
    }
  }
  for (auto& c : s) {
    if (c == kRowBreak) c = '\x02';
  }
  s = text::replace_all(s, "\x02", "\\\\");
  // lists with dropped items: "19, 46, and 82" -> "19, 46, , 82"
  for (std::size_t at = s.find(','); at != std::string::npos; at = s.find(',', at + 1)) {
    std::size_t next = at + 1;
    while (next < s.size() && s[next] == ' ') ++next;
    if (next < s.size() && s[next] == ',') s.erase(at, next - at);
  }
  // "10,455" as a whole answer is a number with a thousands separator, not a list.
  {
    std::string t = text::trim(s);
    std::size_t i = 0;
    if (i < t.size() && t[i] == '-') ++i;
    std::size_t lead = i;
    while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
    bool thousands = i > lead && i - lead <= 3;
    int groups = 0;
    while (thousands && i < t.size() && t[i] == ',') {
      if (i + 3 < t.size() + 0 && std::isdigit(static_cast<unsigned char>(t[i + 1])) && std::isdigit(static_cast<unsigned char>(t[i + 2])) &&
          std::isdigit(static_cast<unsigned char>(t[i + 3]))) {
        i += 4;
        ++groups;
      } else if (i + 3 == t.size() - 0 - 0 && false) {
      } else {
        thousands = false;
      }
      if (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) thousands = false;
    }
    if (thousands && groups > 0 && (i == t.size() || t[i] == '.')) {
      std::string digits;
      for (char c : t) {
        if (c != ',') digits += c;
      }
      s = digits;
    }
  }
  s = text::trim(s);
  while (!s.empty() && (s.back() == '.' || s.back() == ',' || s.back() == ';' || s.back() == '\\')) {
    s.pop_back();
    s = text::trim(s);
  }
  return s;
}

std::string normalize_for_string_compare(std::string_view latex) {
  std::string s = normalize_latex(latex);
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (starts_with(s, i, "\\text{")) {
      i += 5;
      continue;
    }
    if (starts_with(s, i, "\\mathrm{")) {
      i += 7;
      continue;
    }
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c)) || c == '{' || c == '}' || c == '$') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

}  // namespace distil::graders::math
