#include "graders/code_values.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>
#include <unordered_set>

namespace distil::graders::code {
namespace {

// The runner nests at most 2000 containers; a tuple, dict or set is two JSON levels (object, array).
constexpr int kMaxDepth = 4100;

using Kind = PyValue::Kind;

void append_utf8(std::string& out, unsigned cp) {
  // Lone surrogates are kept (as CPython's "surrogatepass" does), so no code point is lost.
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string canonical_integer(std::string_view digits, bool negative) {
  std::size_t lead = digits.find_first_not_of('0');
  if (lead == std::string_view::npos) return "0";
  return (negative ? "-" : "") + std::string(digits.substr(lead));
}

class Parser {
 public:
  Parser(std::string_view s, bool tagged) : s_(s), tagged_(tagged) {}

  std::optional<PyValue> document() {
    skip();
    auto v = value(0);
    if (!v) return std::nullopt;
    skip();
    if (pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  std::optional<PyValue> value(int depth) {
    if (depth > kMaxDepth || pos_ >= s_.size()) return std::nullopt;
    PyValue v;
    const char c = s_[pos_];
    if (c == '"') {
      v.kind = Kind::string;
      if (!string(v.text)) return std::nullopt;
      return v;
    }
    if (c == '[') {
      v.kind = Kind::list;
      if (!array(v.items, depth)) return std::nullopt;
      return v;
    }
    if (c == '{') return object(depth);
    if (literal("null")) return v;
    if (literal("true") || literal("false")) {
      v.kind = Kind::boolean;
      v.boolean = s_[pos_ - 1] == 'e' && s_[pos_ - 2] == 'u';
      return v;
    }
    if (!tagged_ && literal("NaN")) return floating("nan", std::nan(""));
    if (!tagged_ && literal("Infinity")) return floating("inf", HUGE_VAL);
    if (!tagged_ && literal("-Infinity")) return floating("-inf", -HUGE_VAL);
    return number();
  }

  static PyValue floating(std::string text, double x) {
    PyValue v;
    v.kind = Kind::floating;
    v.text = std::move(text);
    v.number = x;
    return v;
  }

  std::optional<PyValue> number() {
    const std::size_t start = pos_;
    bool negative = false;
    if (pos_ < s_.size() && s_[pos_] == '-') {
      negative = true;
      ++pos_;
    }
    const std::size_t int_start = pos_;
    if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) return std::nullopt;
    if (s_[pos_] == '0') {
      ++pos_;
    } else {
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    const std::size_t int_end = pos_;
    bool is_float = false;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      const std::size_t f = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      if (pos_ == f) return std::nullopt;
      is_float = true;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      const std::size_t e = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      if (pos_ == e) return std::nullopt;
      is_float = true;
    }
    const std::string lexeme(s_.substr(start, pos_ - start));
    if (is_float) return floating(lexeme, std::strtod(lexeme.c_str(), nullptr));
    PyValue v;
    v.kind = Kind::integer;
    v.text = canonical_integer(s_.substr(int_start, int_end - int_start), negative);
    return v;
  }

  bool hex4(unsigned& out) {
    if (pos_ + 4 > s_.size()) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9') out |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') out |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') out |= static_cast<unsigned>(c - 'A' + 10);
      else return false;
    }
    return true;
  }

  bool string(std::string& out) {
    ++pos_;  // "
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;  // json.loads is strict
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) return false;
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && s_.substr(pos_, 2) == "\\u") {
            const std::size_t save = pos_;
            pos_ += 2;
            unsigned low;
            if (hex4(low) && low >= 0xDC00 && low < 0xE000) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              pos_ = save;
            }
          }
          append_utf8(out, cp);
          break;
        }
        default: return false;
      }
    }
    return false;
  }

  bool array(std::vector<PyValue>& items, int depth) {
    ++pos_;  // [
    skip();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      skip();
      auto v = value(depth + 1);
      if (!v) return false;
      items.push_back(std::move(*v));
      skip();
      if (pos_ >= s_.size()) return false;
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (s_[pos_] == ']') {
        ++pos_;
        return true;
      }
      return false;
    }
  }

  std::optional<PyValue> object(int depth) {
    ++pos_;  // {
    std::vector<std::pair<std::string, PyValue>> members;
    skip();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
    } else {
      while (true) {
        skip();
        if (pos_ >= s_.size() || s_[pos_] != '"') return std::nullopt;
        std::string key;
        if (!string(key)) return std::nullopt;
        skip();
        if (pos_ >= s_.size() || s_[pos_] != ':') return std::nullopt;
        ++pos_;
        skip();
        auto v = value(depth + 1);
        if (!v) return std::nullopt;
        members.emplace_back(std::move(key), std::move(*v));
        skip();
        if (pos_ >= s_.size()) return std::nullopt;
        if (s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (s_[pos_] == '}') {
          ++pos_;
          break;
        }
        return std::nullopt;
      }
    }
    PyValue v;
    if (!tagged_) {
      // json.loads: a repeated key keeps its first position and its last value.
      v.kind = Kind::dict;
      std::unordered_map<std::string, std::size_t> seen;
      for (auto& [key, value] : members) {
        auto [it, fresh] = seen.emplace(key, v.entries.size());
        if (!fresh) {
          v.entries[it->second].second = std::move(value);
          continue;
        }
        PyValue k;
        k.kind = Kind::string;
        k.text = key;
        v.entries.emplace_back(std::move(k), std::move(value));
      }
      return v;
    }
    if (members.size() != 1) return std::nullopt;
    auto& [tag, body] = members.front();
    if (tag == "i" && body.kind == Kind::string) {
      std::string_view d = body.text;
      const bool negative = !d.empty() && d[0] == '-';
      if (negative) d.remove_prefix(1);
      if (d.empty() || d.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
      v.kind = Kind::integer;
      v.text = canonical_integer(d, negative);
      return v;
    }
    if (tag == "f" && body.kind == Kind::string) {
      if (body.text == "inf") return floating("inf", HUGE_VAL);
      if (body.text == "-inf") return floating("-inf", -HUGE_VAL);
      if (body.text == "nan") return floating("nan", std::nan(""));
      return std::nullopt;
    }
    if (body.kind != Kind::list) return std::nullopt;
    if (tag == "t" || tag == "s" || tag == "z") {
      v.kind = tag == "t" ? Kind::tuple : tag == "s" ? Kind::set : Kind::frozenset;
      v.items = std::move(body.items);
      return v;
    }
    if (tag == "d") {
      v.kind = Kind::dict;
      for (auto& pair : body.items) {
        if (pair.kind != Kind::list || pair.items.size() != 2) return std::nullopt;
        v.entries.emplace_back(std::move(pair.items[0]), std::move(pair.items[1]));
      }
      return v;
    }
    return std::nullopt;
  }

  std::string_view s_;
  bool tagged_;
  std::size_t pos_ = 0;
};

bool is_number(const PyValue& v) { return v.kind == Kind::boolean || v.kind == Kind::integer || v.kind == Kind::floating; }

// An integral finite double as canonical decimal digits (glibc prints it exactly).
std::optional<std::string> integral_digits(double x) {
  if (!std::isfinite(x) || std::floor(x) != x) return std::nullopt;
  char buf[400];
  std::snprintf(buf, sizeof(buf), "%.0f", x);
  std::string s = buf;
  if (s == "-0") s = "0";
  return s;
}

std::string integer_text(const PyValue& v) { return v.kind == Kind::boolean ? (v.boolean ? "1" : "0") : v.text; }

bool numbers_equal(const PyValue& a, const PyValue& b) {
  if (a.kind == Kind::floating && b.kind == Kind::floating) return a.number == b.number;
  if (a.kind == Kind::floating || b.kind == Kind::floating) {
    const PyValue& f = a.kind == Kind::floating ? a : b;
    const PyValue& i = a.kind == Kind::floating ? b : a;
    auto digits = integral_digits(f.number);
    return digits && *digits == integer_text(i);
  }
  return integer_text(a) == integer_text(b);
}

// Equal plain hashable values get equal keys (True, 1 and 1.0 all give "n1"); nullopt for an
// unhashable value or nan (never equal to anything, itself included, for our purposes).
std::optional<std::string> hash_key(const PyValue& v, int depth = 0) {
  if (depth > kMaxDepth) return std::nullopt;
  switch (v.kind) {
    case Kind::none: return std::string("N");
    case Kind::boolean:
    case Kind::integer: return "n" + integer_text(v);
    case Kind::floating: {
      if (std::isnan(v.number)) return std::nullopt;
      if (auto d = integral_digits(v.number)) return "n" + *d;
      char buf[64];
      std::snprintf(buf, sizeof(buf), "f%a", v.number);
      return std::string(buf);
    }
    case Kind::string: return "s" + std::to_string(v.text.size()) + ":" + v.text;
    case Kind::tuple: {
      std::string k = "t" + std::to_string(v.items.size()) + "(";
      for (const auto& item : v.items) {
        auto ik = hash_key(item, depth + 1);
        if (!ik) return std::nullopt;
        k += std::to_string(ik->size()) + ":" + *ik;
      }
      return k + ")";
    }
    case Kind::frozenset: {
      std::vector<std::string> keys;
      for (const auto& item : v.items) {
        auto ik = hash_key(item, depth + 1);
        if (!ik) return std::nullopt;
        keys.push_back(std::move(*ik));
      }
      std::sort(keys.begin(), keys.end());
      keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
      std::string k = "z" + std::to_string(keys.size()) + "{";
      for (const auto& ik : keys) k += std::to_string(ik.size()) + ":" + ik;
      return k + "}";
    }
    default: return std::nullopt;  // list, dict, set: unhashable
  }
}

bool equal(const PyValue& a, const PyValue& b, int depth) {
  if (depth > kMaxDepth) return false;
  if (is_number(a) && is_number(b)) return numbers_equal(a, b);
  const bool a_set = a.kind == Kind::set || a.kind == Kind::frozenset, b_set = b.kind == Kind::set || b.kind == Kind::frozenset;
  if (a_set && b_set) {
    if (a.items.size() != b.items.size()) return false;
    std::unordered_set<std::string> members;
    for (const auto& item : b.items) {
      auto k = hash_key(item);
      if (!k) return false;
      members.insert(std::move(*k));
    }
    if (members.size() != b.items.size()) return false;
    for (const auto& item : a.items) {
      auto k = hash_key(item);
      if (!k || !members.count(*k)) return false;
    }
    return true;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::none: return true;
    case Kind::string: return a.text == b.text;
    case Kind::list:
    case Kind::tuple:
      if (a.items.size() != b.items.size()) return false;
      for (std::size_t i = 0; i < a.items.size(); ++i)
        if (!equal(a.items[i], b.items[i], depth + 1)) return false;
      return true;
    case Kind::dict: {
      if (a.entries.size() != b.entries.size()) return false;
      std::unordered_map<std::string, std::size_t> index;
      for (std::size_t i = 0; i < b.entries.size(); ++i) {
        auto k = hash_key(b.entries[i].first);
        if (!k) return false;
        index.emplace(std::move(*k), i);
      }
      if (index.size() != b.entries.size()) return false;
      for (const auto& [key, value] : a.entries) {
        auto k = hash_key(key);
        if (!k) return false;
        auto it = index.find(*k);
        if (it == index.end() || !equal(value, b.entries[it->second].second, depth + 1)) return false;
      }
      return true;
    }
    default: return false;
  }
}

void repr_string(std::string& out, const std::string& s) {
  const bool single = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char quote = single ? '"' : '\'';
  out += quote;
  for (unsigned char c : s) {
    if (c == static_cast<unsigned char>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
}

void repr(std::string& out, const PyValue& v, std::size_t max_chars, int depth) {
  if (out.size() > max_chars || depth > kMaxDepth) {
    return;
  }
  auto items = [&](const std::vector<PyValue>& list) {
    for (std::size_t i = 0; i < list.size() && out.size() <= max_chars; ++i) {
      if (i) out += ", ";
      repr(out, list[i], max_chars, depth + 1);
    }
  };
  switch (v.kind) {
    case Kind::none: out += "None"; break;
    case Kind::boolean: out += v.boolean ? "True" : "False"; break;
    case Kind::integer:
    case Kind::floating: out += v.text; break;
    case Kind::string: repr_string(out, v.text); break;
    case Kind::list:
      out += '[';
      items(v.items);
      out += ']';
      break;
    case Kind::tuple:
      out += '(';
      items(v.items);
      if (v.items.size() == 1) out += ',';
      out += ')';
      break;
    case Kind::set:
      if (v.items.empty()) {
        out += "set()";
        break;
      }
      out += '{';
      items(v.items);
      out += '}';
      break;
    case Kind::frozenset:
      out += "frozenset(";
      if (!v.items.empty()) {
        out += '{';
        items(v.items);
        out += '}';
      }
      out += ')';
      break;
    case Kind::dict:
      out += '{';
      for (std::size_t i = 0; i < v.entries.size() && out.size() <= max_chars; ++i) {
        if (i) out += ", ";
        repr(out, v.entries[i].first, max_chars, depth + 1);
        out += ": ";
        repr(out, v.entries[i].second, max_chars, depth + 1);
      }
      out += '}';
      break;
  }
}

}  // namespace

std::optional<PyValue> parse_python_json(std::string_view text) { return Parser(text, false).document(); }

std::optional<PyValue> parse_tagged_result(std::string_view text) { return Parser(text, true).document(); }

bool python_equal(const PyValue& a, const PyValue& b) { return equal(a, b, 0); }

std::string python_repr(const PyValue& v, std::size_t max_chars) {
  std::string out;
  repr(out, v, max_chars, 0);
  if (out.size() > max_chars) {
    std::size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // a character boundary
    out.resize(cut);
    out += "...";
  }
  return out;
}

}  // namespace distil::graders::code
