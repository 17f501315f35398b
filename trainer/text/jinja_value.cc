// Jinja runtime values: conversion from JSON and the JavaScript formatting rules
// @huggingface/jinja's output depends on (number printing, JSON.stringify, UTF-16 lengths).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

#include "trainer/text/jinja_ast.h"
#include "trainer/text/jinja_value.h"

namespace distil::text::jinja {

void fail(int line, const std::string& what) {
  throw Error("chat template line " + std::to_string(line) + ": " + what);
}

const char* type_name(Type t) {
  switch (t) {
    case Type::Undefined:
      return "undefined";
    case Type::Null:
      return "none";
    case Type::Bool:
      return "boolean";
    case Type::Int:
      return "integer";
    case Type::Float:
      return "float";
    case Type::String:
      return "string";
    case Type::Array:
      return "list";
    case Type::Object:
      return "mapping";
    case Type::Namespace:
      return "namespace";
    case Type::Function:
      return "function";
  }
  return "value";
}

namespace {

// A canonical array index ("0", "17", below 2^32 - 1): JavaScript lists those keys first.
bool is_array_index(const std::string& key, uint64_t& index) {
  if (key.empty() || key.size() > 10 || (key.size() > 1 && key[0] == '0')) return false;
  index = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    index = index * 10 + static_cast<uint64_t>(c - '0');
  }
  return index < 4294967295ull;
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j, int max_depth, int depth) {
  if (depth > max_depth)
    throw Error("chat template context nests deeper than " + std::to_string(max_depth) + " levels");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::null();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::of(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::of_int(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Value::of_int(static_cast<int64_t>(u));
      return Value::of_float(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float: {
      // JSON.parse makes 2.0 the number 2, which @huggingface/jinja treats as an integer.
      const double d = j.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18)
        return Value::of_int(static_cast<int64_t>(d));
      return Value::of_float(d);
    }
    case nlohmann::ordered_json::value_t::string:
      return Value::of(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e, max_depth, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value v = Value::dict();
      std::vector<std::pair<uint64_t, const std::string*>> indexed;
      for (const auto& [key, value] : j.items()) {
        uint64_t index;
        if (is_array_index(key, index)) indexed.emplace_back(index, &key);
      }
      std::sort(indexed.begin(), indexed.end());
      for (const auto& [index, key] : indexed)
        v.object->set(*key, from_json(j.at(*key), max_depth, depth + 1));
      for (const auto& [key, value] : j.items()) {
        uint64_t index;
        if (!is_array_index(key, index)) v.object->set(key, from_json(value, max_depth, depth + 1));
      }
      return v;
    }
    default:
      throw Error("chat template context holds a value JSON cannot express (binary)");
  }
}

std::string js_number_to_string(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (value == 0) return "0";
  // Shortest round-trip digits d1.d2d3...e±X, then JavaScript's Number::toString layout.
  char buf[64];
  const auto result =
      std::to_chars(buf, buf + sizeof buf, std::fabs(value), std::chars_format::scientific);
  const std::string sci(buf, result.ptr);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, 1) + (e > 2 ? sci.substr(2, e - 2) : "");
  const int exponent = std::stoi(sci.substr(e + 1));
  const int k = static_cast<int>(digits.size()), n = exponent + 1;
  std::string out = value < 0 ? "-" : "";
  if (k <= n && n <= 21) {
    out += digits + std::string(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out += digits.substr(0, static_cast<size_t>(n)) + "." + digits.substr(static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0." + std::string(static_cast<size_t>(-n), '0') + digits;
  } else {
    out += digits.substr(0, 1);
    if (k > 1) out += "." + digits.substr(1);
    out += (n - 1 >= 0 ? "e+" : "e-") + std::to_string(std::abs(n - 1));
  }
  return out;
}

std::string float_display(double value) {
  if (value == 0 && std::signbit(value)) return "-0.0";
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e21)
    return js_number_to_string(value) + ".0";  // toFixed(1)
  return js_number_to_string(value);
}

int64_t utf16_length(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;  // a code point starts
    if (c >= 0xF0) ++n;           // astral: a surrogate pair
  }
  return n;
}

std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0xC0) n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    size_t k = 1;
    while (k < n && i + k < s.size() && (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80) ++k;
    out.push_back(s.substr(i, k));
    i += k;
  }
  return out;
}

namespace {

void append_u_escape(std::string& out, unsigned unit) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\u%04x", unit & 0xFFFFu);
  out += buf;
}

}  // namespace

std::string json_quote(const std::string& s, bool ensure_ascii) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      default:
        break;
    }
    if (c < 0x20) {
      append_u_escape(out, c);
    } else if (c == 0x7F && ensure_ascii) {
      append_u_escape(out, c);
    } else if (c >= 0x80 && ensure_ascii) {
      // Decode one code point; escape it as UTF-16 units, as makeAsciiSafe does.
      uint32_t cp = 0;
      size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      if (n == 1 || i + n > s.size()) {
        append_u_escape(out, 0xFFFD);
        continue;
      }
      cp = c & (0xFF >> (n + 1));
      for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
      i += n - 1;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        append_u_escape(out, 0xD800 + (cp >> 10));
        append_u_escape(out, 0xDC00 + (cp & 0x3FF));
      } else {
        append_u_escape(out, cp);
      }
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string to_json(const Value& v, const JsonOptions& o, bool undefined_as_null, int max_depth,
                    int depth) {
  if (depth > max_depth)
    throw Error("tojson: the value nests deeper than " + std::to_string(max_depth) + " levels");
  std::string item_sep = ", ", key_sep = ": ";
  if (o.custom_separators) {
    item_sep = o.item_separator;
    key_sep = o.key_separator;
  } else if (o.indent > 0) {
    item_sep = ",";
  }
  switch (v.type) {
    case Type::Undefined:
      return undefined_as_null ? "null" : "undefined";
    case Type::Null:
      return "null";
    case Type::Bool:
      return v.boolean ? "true" : "false";
    case Type::Int:
      return std::to_string(v.integer);
    case Type::Float:
      return std::isfinite(v.real) ? js_number_to_string(v.real) : "null";
    case Type::String:
      return json_quote(v.str, o.ensure_ascii);
    case Type::Function:
      throw Error("tojson: a function (macro or builtin) cannot be converted to JSON");
    case Type::Array:
    case Type::Object:
    case Type::Namespace:
      break;
  }
  const std::string indent(static_cast<size_t>(std::max(0, o.indent)), ' ');
  std::string base = "\n";
  for (int d = 0; d < depth; ++d) base += indent;
  const std::string child = base + indent;
  std::vector<std::string> core;
  if (v.type == Type::Array) {
    for (const auto& e : *v.array)
      core.push_back(to_json(e, o, undefined_as_null, max_depth, depth + 1));
    std::string out = "[";
    if (o.indent > 0 && !core.empty()) {
      out += child;
      for (size_t i = 0; i < core.size(); ++i) out += (i ? item_sep + child : "") + core[i];
      return out + base + "]";
    }
    for (size_t i = 0; i < core.size(); ++i) out += (i ? item_sep : "") + core[i];
    return out + "]";
  }
  auto entries = v.object->entries;
  if (o.sort_keys)
    std::stable_sort(entries.begin(), entries.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [key, value] : entries) {
    std::string item = json_quote(key, o.ensure_ascii) + key_sep +
                       to_json(value, o, undefined_as_null, max_depth, depth + 1);
    core.push_back(o.indent > 0 ? child + item : item);
  }
  std::string out = "{";
  for (size_t i = 0; i < core.size(); ++i) out += (i ? item_sep : "") + core[i];
  return out + (o.indent > 0 && !core.empty() ? base : "") + "}";
}

}  // namespace distil::text::jinja
