// Jinja chat templates: the builtins (truthiness and equality, printing, the globals, the methods
// of strings and dicts, tests and filters) with @huggingface/jinja's semantics (src/runtime.ts).
// Anything it does not implement is an Error naming it and the template line.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <ctime>

#include "trainer/text/jinja_builtins.h"

namespace distil::text::jinja {

void Budget::step(int line) {
  if (++steps_ > limits_.max_steps)
    fail(line, "the template did more than " + std::to_string(limits_.max_steps) +
                   " evaluation steps (runaway loop?)");
}

void Budget::check_size(size_t bytes, int line) const {
  if (bytes > limits_.max_output_bytes)
    fail(line, "a rendered string or list exceeds " + std::to_string(limits_.max_output_bytes) +
                   " bytes");
}

namespace {
double js_string_to_number(const std::string& s);
std::string ascii_upper(std::string s);
std::string ascii_lower(std::string s);
bool is_word_byte(char c);
std::string trim(const std::string& s);
std::string strftime_now(const std::string& format);
Value items_of(const Value& object);
std::string title_case(const std::string& text);
std::string replace(const std::string& text, const Args& a, int line, Budget& budget);
Value dictsort(const Value& object, const Args& args, int line);
int compare(const Value& a, const Value& b, bool case_sensitive, int line);
Value attribute_path(const Value& item, const std::string& path);
Value array_filter(const Node& n, const Value& operand, const Args& args, Budget& budget);
const Value* arg_or(const Args& args, size_t i, const char* keyword);
}  // namespace

bool truthy(const Value& v) {
  switch (v.type) {
    case Type::Undefined:
    case Type::Null:
      return false;
    case Type::Bool:
      return v.boolean;
    case Type::Int:
      return v.integer != 0;
    case Type::Float:
      return v.real != 0 && !std::isnan(v.real);
    case Type::String:
      return !v.str.empty();
    case Type::Array:
      return !v.array->empty();
    case Type::Object:
      return !v.object->entries.empty();
    case Type::Namespace:
    case Type::Function:
      return true;
  }
  return false;
}

namespace {

// JavaScript's ToNumber for a string (used by ==, which @huggingface/jinja leaves to JavaScript).
double js_string_to_number(const std::string& s) {
  const std::string t(js_trim_end(js_trim_start(s)));
  if (t.empty()) return 0;
  if (t == "Infinity" || t == "+Infinity") return INFINITY;
  if (t == "-Infinity") return -INFINITY;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
    if (t.find_first_not_of("0123456789abcdefABCDEF", 2) != std::string::npos) return NAN;
    return std::strtod(t.c_str(), nullptr);  // (hexadecimal; overflows to infinity, never throws)
  }
  if (t.find_first_not_of("0123456789+-.eE") != std::string::npos) return NAN;
  char* end = nullptr;
  const double d = std::strtod(t.c_str(), &end);
  return end == t.c_str() + t.size() ? d : NAN;
}

}  // namespace

// `left.value == right.value` in JavaScript.
bool loose_equal(const Value& a, const Value& b) {
  const bool a_nullish = a.type == Type::Null || a.type == Type::Undefined;
  const bool b_nullish = b.type == Type::Null || b.type == Type::Undefined;
  if (a_nullish || b_nullish) return a_nullish && b_nullish;
  const auto numeric = [](const Value& v) { return v.is_number() || v.type == Type::Bool; };
  const auto as_number = [](const Value& v) {
    if (v.type == Type::Bool) return v.boolean ? 1.0 : 0.0;
    if (v.type == Type::String) return js_string_to_number(v.str);
    return v.number();
  };
  if (a.type == Type::String && b.type == Type::String) return a.str == b.str;
  if (a.type == Type::Int && b.type == Type::Int) return a.integer == b.integer;
  if ((numeric(a) || a.type == Type::String) && (numeric(b) || b.type == Type::String))
    return as_number(a) == as_number(b);
  if (a.type != b.type) return false;  // a container against a primitive
  if (a.type == Type::Array) return a.array == b.array;
  if (a.type == Type::Object || a.type == Type::Namespace) return a.object == b.object;
  if (a.type == Type::Function) return a.function == b.function;
  return false;
}

// `===` on the JavaScript values (the `equalto` test, `in` on lists, `unique`).
bool strict_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.number() == b.number();
  if (a.type != b.type) return false;
  switch (a.type) {
    case Type::Undefined:
    case Type::Null:
      return true;
    case Type::Bool:
      return a.boolean == b.boolean;
    case Type::String:
      return a.str == b.str;
    case Type::Array:
      return a.array == b.array;
    case Type::Object:
    case Type::Namespace:
      return a.object == b.object;
    case Type::Function:
      return a.function == b.function;
    default:
      return false;
  }
}

namespace {

std::string ascii_upper(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return s;
}

std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return s;
}

bool is_word_byte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string trim(const std::string& s) { return std::string(js_trim_end(js_trim_start(s))); }

}  // namespace

// Python-style slice bounds over n items (utils.ts `slice`).
std::vector<int64_t> slice_indices(int64_t n, std::optional<int64_t> start,
                                   std::optional<int64_t> stop, int64_t step) {
  std::vector<int64_t> out;
  if (step > 0) {
    int64_t b = start.value_or(0), e = stop.value_or(n);
    b = b < 0 ? std::max<int64_t>(n + b, 0) : std::min(b, n);
    e = e < 0 ? std::max<int64_t>(n + e, 0) : std::min(e, n);
    for (int64_t i = b; i < e; i += step) out.push_back(i);
  } else if (step < 0) {
    int64_t b = start.value_or(n - 1), e = stop.value_or(-1);
    b = b < 0 ? std::max<int64_t>(n + b, -1) : std::min(b, n - 1);
    e = e < -1 ? std::max<int64_t>(n + e, -1) : std::min(e, n - 1);
    for (int64_t i = b; i > e; i += step) out.push_back(i);
  }
  return out;
}

std::string display(const Value& v, int line, const Budget& budget) {
  switch (v.type) {
    case Type::Undefined:
    case Type::Null:
      return "";
    case Type::Bool:
      return v.boolean ? "true" : "false";
    case Type::Int:
      return std::to_string(v.integer);
    case Type::Float:
      return float_display(v.real);
    case Type::String:
      return v.str;
    case Type::Function:
      fail(line, "cannot print " + v.function->name + " (call it)");
    default:
      return json_text(v, JsonOptions{}, false, line, budget);
  }
}

std::string json_text(const Value& v, const JsonOptions& o, bool undefined_as_null, int line,
                      const Budget& budget) {
  try {
    return to_json(v, o, undefined_as_null, budget.limits().max_depth);
  } catch (const Error& e) {
    fail(line, e.what());
  }
}

// The text of a primitive in `+` and `~` (JavaScript's value.toString(): floats print without .0).
std::string concat_text(const Value& v, int line) {
  switch (v.type) {
    case Type::String:
      return v.str;
    case Type::Int:
      return std::to_string(v.integer);
    case Type::Float:
      return js_number_to_string(v.real);
    case Type::Bool:
      return v.boolean ? "true" : "false";
    default:
      fail(line, std::string("cannot concatenate a ") + type_name(v.type) + " as text");
  }
}

Value make_function(std::string name, std::function<Value(const Args&, int)> call) {
  Value v = Value::make(Type::Function);
  v.function = std::make_shared<FunctionData>();
  v.function->name = std::move(name);
  v.function->call = std::move(call);
  return v;
}

std::vector<std::pair<std::string, Value>> global_variables(Budget& budget) {
  std::vector<std::pair<std::string, Value>> g;
  for (const char* name : {"true", "True"}) g.emplace_back(name, Value::of(true));
  for (const char* name : {"false", "False"}) g.emplace_back(name, Value::of(false));
  for (const char* name : {"none", "None"}) g.emplace_back(name, Value::null());
  g.emplace_back(
      "raise_exception", make_function("raise_exception", [](const Args& a, int line) -> Value {
        std::string message = a.positional.empty()                   ? ""
                              : a.positional[0].type == Type::String ? a.positional[0].str
                                                                     : "";
        if (!a.positional.empty() && a.positional[0].type != Type::String &&
            a.positional[0].type != Type::Undefined)
          message = type_name(a.positional[0].type);
        throw RaisedException(message, line);
      }));
  g.emplace_back(
      "namespace", make_function("namespace", [](const Args& a, int line) {
        Value ns = Value::namespace_();
        if (a.positional.size() > 1)
          fail(line, "namespace() takes at most one positional argument");
        if (a.positional.size() == 1) {
          const Value& src = a.positional[0];
          if (src.type != Type::Object)
            fail(line, std::string("namespace() copies a mapping, got ") + type_name(src.type));
          for (const auto& [k, v] : src.object->entries) ns.object->set(k, v);
        }
        for (const auto& [k, v] : a.keywords) ns.object->set(k, v);
        return ns;
      }));
  g.emplace_back(
      "range", make_function("range", [&budget](const Args& a, int line) {
        if (a.positional.empty() || a.positional.size() > 3 || !a.keywords.empty())
          fail(line, "range() takes one to three integer arguments");
        for (const auto& v : a.positional)
          if (v.type != Type::Int)
            fail(line, std::string("range() arguments must be integers, got ") + type_name(v.type));
        int64_t start = 0, stop = a.positional[0].integer, stride = 1;
        if (a.positional.size() >= 2)
          start = a.positional[0].integer, stop = a.positional[1].integer;
        if (a.positional.size() == 3) stride = a.positional[2].integer;
        if (stride == 0) fail(line, "range() step must not be zero");
        std::vector<Value> out;
        for (int64_t i = start; stride > 0 ? i < stop : i > stop;) {
          budget.step(line);
          out.push_back(Value::of_int(i));
          if (__builtin_add_overflow(i, stride, &i)) break;
        }
        return Value::list(std::move(out));
      }));
  g.emplace_back("strftime_now", make_function("strftime_now", [](const Args& a, int line) {
                   if (a.positional.size() != 1 || a.positional[0].type != Type::String)
                     fail(line, "strftime_now() takes a format string");
                   return Value::of(strftime_now(a.positional[0].str));
                 }));
  return g;
}

namespace {

// The local time with the directives @huggingface/jinja implements (%Y %m %d %b %B %H %M %%);
// other directives are left as written, as it does.
std::string strftime_now(const std::string& format) {
  static const char* const kMonths[] = {"January",   "February", "March",    "April",
                                        "May",       "June",     "July",     "August",
                                        "September", "October",  "November", "December"};
  const std::time_t now = std::time(nullptr);
  std::tm t{};
  localtime_r(&now, &t);
  const auto pad2 = [](int v) { return (v < 10 ? "0" : "") + std::to_string(v); };
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%' || i + 1 >= format.size()) {
      out += format[i];
      continue;
    }
    const char d = format[i + 1];
    switch (d) {
      case 'Y':
        out += std::to_string(t.tm_year + 1900);
        break;
      case 'm':
        out += pad2(t.tm_mon + 1);
        break;
      case 'd':
        out += pad2(t.tm_mday);
        break;
      case 'b':
        out += std::string(kMonths[t.tm_mon]).substr(0, 3);
        break;
      case 'B':
        out += kMonths[t.tm_mon];
        break;
      case 'H':
        out += pad2(t.tm_hour);
        break;
      case 'M':
        out += pad2(t.tm_min);
        break;
      case '%':
        out += '%';
        break;
      default:
        out += format.substr(i, 2);
    }
    ++i;
  }
  return out;
}

Value items_of(const Value& object) {
  std::vector<Value> out;
  for (const auto& [k, v] : object.object->entries) out.push_back(Value::list({Value::of(k), v}));
  return Value::list(std::move(out));
}

}  // namespace

Value dict_attribute(const Value& object, const std::string& name) {
  if (name == "get")
    return make_function("dict.get", [object](const Args& a, int line) {
      if (a.positional.empty() || a.positional[0].type != Type::String)
        fail(line, "dict.get() takes a string key");
      if (const Value* v = object.object->find(a.positional[0].str)) return *v;
      return a.positional.size() > 1 ? a.positional[1] : Value::null();
    });
  if (name == "items")
    return make_function("dict.items", [object](const Args&, int) { return items_of(object); });
  if (name == "keys")
    return make_function("dict.keys", [object](const Args&, int) {
      std::vector<Value> out;
      for (const auto& [k, v] : object.object->entries) out.push_back(Value::of(k));
      return Value::list(std::move(out));
    });
  if (name == "values")
    return make_function("dict.values", [object](const Args&, int) {
      std::vector<Value> out;
      for (const auto& [k, v] : object.object->entries) out.push_back(v);
      return Value::list(std::move(out));
    });
  return Value::undefined();
}

Value string_attribute(const Value& s, const std::string& name, Budget& budget) {
  const std::string& text = s.str;
  if (name == "length") return Value::of_int(utf16_length(text));
  const auto method = [&](std::function<Value(const Args&, int)> f) {
    return make_function("str." + name, std::move(f));
  };
  // As in @huggingface/jinja, strip/lstrip/rstrip ignore an argument and remove all
  // whitespace (Python's str.strip('\n') would remove only newlines).
  if (name == "strip") return method([text](const Args&, int) { return Value::of(trim(text)); });
  if (name == "lstrip")
    return method([text](const Args&, int) { return Value::of(std::string(js_trim_start(text))); });
  if (name == "rstrip")
    return method([text](const Args&, int) { return Value::of(std::string(js_trim_end(text))); });
  if (name == "upper")
    return method([text](const Args&, int) { return Value::of(ascii_upper(text)); });
  if (name == "lower")
    return method([text](const Args&, int) { return Value::of(ascii_lower(text)); });
  if (name == "title")
    return method([text](const Args&, int) { return Value::of(title_case(text)); });
  if (name == "capitalize")
    return method([text](const Args&, int) {
      return Value::of(text.empty() ? text : ascii_upper(text.substr(0, 1)) + text.substr(1));
    });
  if (name == "startswith" || name == "endswith") {
    const bool start = name == "startswith";
    return method([text, start, name](const Args& a, int line) {
      if (a.positional.empty()) fail(line, name + "() needs an argument");
      const auto test = [&](const std::string& p) {
        if (p.size() > text.size()) return false;
        return start ? text.compare(0, p.size(), p) == 0
                     : text.compare(text.size() - p.size(), p.size(), p) == 0;
      };
      const Value& arg = a.positional[0];
      if (arg.type == Type::String) return Value::of(test(arg.str));
      if (arg.type == Type::Array) {
        for (const auto& e : *arg.array) {
          if (e.type != Type::String) fail(line, name + "() tuple elements must be strings");
          if (test(e.str)) return Value::of(true);
        }
        return Value::of(false);
      }
      fail(line, name + "() takes a string or a tuple of strings");
    });
  }
  if (name == "split")
    return method([text](const Args& a, int line) {
      const Value sep = !a.positional.empty() ? a.positional[0]
                        : a.keyword("sep")    ? *a.keyword("sep")
                                              : Value::null();
      const Value max = a.positional.size() > 1 ? a.positional[1]
                        : a.keyword("maxsplit") ? *a.keyword("maxsplit")
                                                : Value::of_int(-1);
      if (sep.type != Type::String && sep.type != Type::Null)
        fail(line, "split() separator must be a string or none");
      if (max.type != Type::Int) fail(line, "split() maxsplit must be an integer");
      std::vector<Value> parts;
      if (sep.type == Type::Null) {
        const std::string_view rest = js_trim_start(text);
        size_t i = 0;
        while (i < rest.size()) {
          const size_t word_start = i;
          while (i < rest.size() && !js_whitespace_at(rest, i)) ++i;
          if (max.integer >= 0 && static_cast<int64_t>(parts.size()) >= max.integer) {
            parts.push_back(Value::of(std::string(rest.substr(word_start))));
            break;
          }
          parts.push_back(Value::of(std::string(rest.substr(word_start, i - word_start))));
          while (size_t w = js_whitespace_at(rest, i)) i += w;
        }
      } else {
        if (sep.str.empty()) fail(line, "split(): empty separator");
        std::vector<std::string> pieces;
        size_t from = 0;
        for (size_t at = text.find(sep.str); at != std::string::npos;
             at = text.find(sep.str, from)) {
          pieces.push_back(text.substr(from, at - from));
          from = at + sep.str.size();
        }
        pieces.push_back(text.substr(from));
        if (max.integer >= 0 && static_cast<int64_t>(pieces.size()) > max.integer) {
          std::string tail;
          for (size_t k = static_cast<size_t>(max.integer); k < pieces.size(); ++k)
            tail += (k > static_cast<size_t>(max.integer) ? sep.str : "") + pieces[k];
          pieces.resize(static_cast<size_t>(max.integer));
          pieces.push_back(tail);
        }
        for (auto& p : pieces) parts.push_back(Value::of(std::move(p)));
      }
      return Value::list(std::move(parts));
    });
  if (name == "replace")
    return method([text, &budget](const Args& a, int line) {
      return Value::of(replace(text, a, line, budget));
    });
  return Value::undefined();
}

namespace {

std::string title_case(const std::string& text) {  // /\b\w/g -> upper (ASCII word characters)
  std::string out = text;
  for (size_t i = 0; i < out.size(); ++i)
    if (is_word_byte(out[i]) && (i == 0 || !is_word_byte(out[i - 1])) && out[i] >= 'a' &&
        out[i] <= 'z')
      out[i] = static_cast<char>(out[i] - 32);
  return out;
}

std::string replace(const std::string& text, const Args& a, int line, Budget& budget) {
  if (a.positional.size() < 2) fail(line, "replace() needs the old and the new string");
  const Value& from = a.positional[0];
  const Value& to = a.positional[1];
  if (from.type != Type::String || to.type != Type::String)
    fail(line, "replace() arguments must be strings");
  Value count = a.positional.size() > 2 ? a.positional[2]
                : a.keyword("count")    ? *a.keyword("count")
                                        : Value::null();
  if (count.type != Type::Int && count.type != Type::Null)
    fail(line, "replace() count must be an integer or none");
  int64_t remaining = count.type == Type::Null || count.integer < 0 ? INT64_MAX : count.integer;
  std::string out;
  if (from.str.empty()) {  // an insertion at every code point boundary
    const auto chars = code_points(text);
    for (size_t i = 0; i <= chars.size(); ++i) {
      if (remaining > 0) out += to.str, --remaining;
      if (i < chars.size()) out += chars[i];
      budget.check_size(out.size(), line);
    }
    return out;
  }
  size_t pos = 0;
  while (remaining > 0) {
    const size_t at = text.find(from.str, pos);
    if (at == std::string::npos) break;
    out += text.substr(pos, at - pos) + to.str;
    pos = at + from.str.size();
    --remaining;
    budget.check_size(out.size(), line);
  }
  return out + text.substr(pos);
}

}  // namespace

// ---------------------------------------------------------------- tests and filters

bool apply_test(const std::string& name, const Value& v, int line) {
  if (name == "defined") return v.type != Type::Undefined;
  if (name == "undefined") return v.type == Type::Undefined;
  if (name == "none") return v.type == Type::Null;
  if (name == "boolean") return v.type == Type::Bool;
  if (name == "true") return v.type == Type::Bool && v.boolean;
  if (name == "false") return v.type == Type::Bool && !v.boolean;
  if (name == "string") return v.type == Type::String;
  if (name == "number") return v.is_number();
  if (name == "integer") return v.type == Type::Int;
  if (name == "callable") return v.type == Type::Function;
  if (name == "iterable") return v.type == Type::Array || v.type == Type::String;
  if (name == "mapping") return v.type == Type::Object;
  if (name == "sequence")
    return v.type == Type::Array || v.type == Type::Object || v.type == Type::String;
  if (name == "lower") return v.type == Type::String && v.str == ascii_lower(v.str);
  if (name == "upper") return v.type == Type::String && v.str == ascii_upper(v.str);
  if (name == "odd" || name == "even") {
    if (v.type != Type::Int)
      fail(line, "test '" + name + "' needs an integer, got " + type_name(v.type));
    return (v.integer % 2 != 0) == (name == "odd");
  }
  fail(line, "unknown test 'is " + name + "'");
}

Value apply_filter(const Node& n, const Value& operand, const Args& args, Budget& budget) {
  const std::string& name = n.str;
  const int line = n.line;
  const auto arg = [&](size_t i, const char* keyword) -> const Value* {
    if (i < args.positional.size()) return &args.positional[i];
    return args.keyword(keyword);
  };
  const auto unsupported = [&]() -> Value {
    fail(line, "filter '" + name + "' is not supported on a " + type_name(operand.type));
  };
  if (name == "safe") return operand;
  if (name == "tojson") {
    JsonOptions o;
    if (const Value* v = args.keyword("indent"); v && v->type != Type::Null) {
      if (v->type != Type::Int) fail(line, "tojson indent must be an integer");
      o.indent = static_cast<int>(std::clamp<int64_t>(v->integer, 0, 64));
    }
    if (const Value* v = args.keyword("ensure_ascii")) {
      if (v->type != Type::Bool) fail(line, "tojson ensure_ascii must be a boolean");
      o.ensure_ascii = v->boolean;
    }
    if (const Value* v = args.keyword("sort_keys")) {
      if (v->type != Type::Bool) fail(line, "tojson sort_keys must be a boolean");
      o.sort_keys = v->boolean;
    }
    if (const Value* v = args.keyword("separators"); v && v->type != Type::Null) {
      if (v->type != Type::Array || v->array->size() != 2 || (*v->array)[0].type != Type::String ||
          (*v->array)[1].type != Type::String)
        fail(line, "tojson separators must be a pair of strings");
      o.custom_separators = true;
      o.item_separator = (*v->array)[0].str;
      o.key_separator = (*v->array)[1].str;
    }
    return Value::of(json_text(operand, o, true, line, budget));
  }
  if (name == "default" || name == "d") {
    const Value fallback = args.positional.empty() ? Value::of(std::string()) : args.positional[0];
    const Value* boolean = arg(1, "boolean");
    if (boolean && boolean->type != Type::Bool)
      fail(line, "default() boolean flag must be a boolean");
    if (operand.type == Type::Undefined || (boolean && boolean->boolean && !truthy(operand)))
      return fallback;
    return operand;
  }
  if (name == "int" || name == "float") {
    const bool to_int = name == "int";
    const Value* fallback = arg(0, "default");
    if (operand.type == Type::String) {
      const std::string t(js_trim_start(operand.str));
      char* end = nullptr;
      if (to_int) {
        errno = 0;
        const long long v = std::strtoll(t.c_str(), &end, 10);
        if (end == t.c_str() || errno == ERANGE) return fallback ? *fallback : Value::of_int(0);
        return Value::of_int(v);
      }
      const double v = std::strtod(t.c_str(), &end);
      if (end == t.c_str()) return fallback ? *fallback : Value::of_float(0);
      return Value::of_float(v);
    }
    if (operand.is_number()) {
      if (!to_int) return Value::of_float(operand.number());
      if (operand.type == Type::Int) return operand;
      if (!std::isfinite(operand.real) || std::fabs(operand.real) >= 9.2e18)
        fail(line, "int: the float is out of range");
      return Value::of_int(static_cast<int64_t>(std::trunc(operand.real)));
    }
    if (operand.type == Type::Bool)
      return to_int ? Value::of_int(operand.boolean) : Value::of_float(operand.boolean);
    return unsupported();
  }
  switch (operand.type) {
    case Type::Array:
      return array_filter(n, operand, args, budget);
    case Type::String: {
      const std::string& s = operand.str;
      if (name == "length" || name == "count") return Value::of_int(utf16_length(s));
      if (name == "upper") return Value::of(ascii_upper(s));
      if (name == "lower") return Value::of(ascii_lower(s));
      if (name == "title") return Value::of(title_case(s));
      if (name == "capitalize")
        return Value::of(s.empty() ? s : ascii_upper(s.substr(0, 1)) + s.substr(1));
      if (name == "trim") return Value::of(trim(s));
      if (name == "string") return operand;
      if (name == "join") {
        if (!n.flag) return operand;
        const Value* sep = arg(0, "d");
        std::string out;
        const auto chars = code_points(s);
        for (size_t i = 0; i < chars.size(); ++i) out += (i && sep ? sep->str : "") + chars[i];
        return Value::of(out);
      }
      if (name == "replace") return Value::of(replace(s, args, line, budget));
      if (name == "indent") {
        const Value* width = arg(0, "width");
        const Value* first = arg(1, "first");
        const Value* blank = arg(2, "blank");
        std::string pad = "    ";
        if (width && width->type == Type::Int)
          pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width->integer, 0, 1024)), ' ');
        else if (width && width->type == Type::String)
          pad = width->str;
        else if (width)
          fail(line, "indent width must be an integer or a string");
        std::string out;
        size_t start = 0, index = 0;
        while (true) {
          const size_t end = s.find('\n', start);
          const std::string piece =
              s.substr(start, end == std::string::npos ? std::string::npos : end - start);
          const bool skip = (index == 0 && !(first && truthy(*first))) ||
                            (piece.empty() && !(blank && truthy(*blank)));
          out += (index ? "\n" : "") + (skip ? piece : pad + piece);
          budget.check_size(out.size(), line);
          if (end == std::string::npos) break;
          start = end + 1;
          ++index;
        }
        return Value::of(out);
      }
      return unsupported();
    }
    case Type::Int:
    case Type::Float:
      if (name == "abs")
        return operand.type == Type::Int
                   ? (operand.integer == INT64_MIN ? unsupported()
                                                   : Value::of_int(std::llabs(operand.integer)))
                   : Value::of_float(std::fabs(operand.real));
      if (name == "string")
        return Value::of(operand.type == Type::Int ? std::to_string(operand.integer)
                                                   : float_display(operand.real));
      return unsupported();
    case Type::Bool:
      if (name == "bool") return operand;
      if (name == "string") return Value::of(operand.boolean ? "true" : "false");
      return unsupported();
    case Type::Object:
      if (name == "items") return items_of(operand);
      if (name == "length" || name == "count")
        return Value::of_int(static_cast<int64_t>(operand.object->entries.size()));
      if (name == "keys" || name == "values") {
        if (operand.object->find(name))
          return unsupported();  // a key would shadow the method in @huggingface/jinja
        return dict_attribute(operand, name).function->call(args, line);
      }
      if (name == "dictsort") return dictsort(operand, args, line);
      return unsupported();
    default:
      return unsupported();
  }
}

namespace {

Value dictsort(const Value& object, const Args& args, int line) {
  const auto flag = [&](size_t i, const char* kw) {
    const Value* v = i < args.positional.size() ? &args.positional[i] : args.keyword(kw);
    if (v && v->type != Type::Bool)
      fail(line, std::string("dictsort ") + kw + " must be a boolean");
    return v && v->boolean;
  };
  const bool case_sensitive = flag(0, "case_sensitive"), reverse = flag(2, "reverse");
  const Value* by = args.positional.size() > 1 ? &args.positional[1] : args.keyword("by");
  const bool by_value = by && by->type == Type::String && by->str == "value";
  if (by && (by->type != Type::String || (by->str != "key" && by->str != "value")))
    fail(line, "dictsort by must be 'key' or 'value'");
  auto entries = object.object->entries;
  std::stable_sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
    const int c = compare(by_value ? a.second : Value::of(a.first),
                          by_value ? b.second : Value::of(b.first), case_sensitive, line);
    return reverse ? c > 0 : c < 0;
  });
  std::vector<Value> out;
  for (auto& [k, v] : entries) out.push_back(Value::list({Value::of(k), v}));
  return Value::list(std::move(out));
}

// compareRuntimeValues: numbers (and booleans) with numbers, strings with strings.
int compare(const Value& a, const Value& b, bool case_sensitive, int line) {
  const auto numeric = [](const Value& v) { return v.is_number() || v.type == Type::Bool; };
  const auto num = [](const Value& v) {
    return v.type == Type::Bool ? (v.boolean ? 1.0 : 0.0) : v.number();
  };
  if (a.type == Type::Null && b.type == Type::Null) return 0;
  if (a.type == Type::Undefined && b.type == Type::Undefined) return 0;
  if (numeric(a) && numeric(b)) return num(a) < num(b) ? -1 : num(a) > num(b) ? 1 : 0;
  if (a.type == Type::String && b.type == Type::String) {
    const std::string x = case_sensitive ? a.str : ascii_lower(a.str),
                      y = case_sensitive ? b.str : ascii_lower(b.str);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  fail(line, std::string("cannot compare a ") + type_name(a.type) + " with a " + type_name(b.type) +
                 " when sorting");
}

Value attribute_path(const Value& item, const std::string& path) {  // "a.b.0"
  Value v = item;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (v.type == Type::Object || v.type == Type::Namespace) {
      const Value* next = v.object->find(part);
      if (!next) return Value::undefined();
      v = *next;
    } else if (v.type == Type::Array) {
      if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos ||
          part.size() > 9)
        return Value::undefined();
      const size_t i = std::stoul(part);
      if (i >= v.array->size()) return Value::undefined();
      v = (*v.array)[i];
    } else {
      return Value::undefined();
    }
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

Value array_filter(const Node& n, const Value& operand, const Args& args, Budget& budget) {
  const std::string& name = n.str;
  const int line = n.line;
  const auto& items = *operand.array;
  if (name == "list") return operand;
  if (name == "first") return items.empty() ? Value::undefined() : items.front();
  if (name == "last") return items.empty() ? Value::undefined() : items.back();
  if (name == "length" || name == "count") return Value::of_int(static_cast<int64_t>(items.size()));
  if (name == "reverse") return Value::list(std::vector<Value>(items.rbegin(), items.rend()));
  if (name == "string") return Value::of(json_text(operand, JsonOptions{}, false, line, budget));
  if (name == "join") {
    const Value* sep =
        n.flag ? (args.positional.empty() ? args.keyword("d") : &args.positional[0]) : nullptr;
    if (sep && sep->type != Type::String) fail(line, "join separator must be a string");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i && sep) out += sep->str;
      const Value& e = items[i];
      if (e.type == Type::String || e.is_number() || e.type == Type::Bool)
        out += concat_text(e, line);
      else if (e.type != Type::Null && e.type != Type::Undefined)
        fail(line, std::string("join: cannot join a ") + type_name(e.type));
      budget.check_size(out.size(), line);
    }
    return Value::of(out);
  }
  if (name == "unique") {
    std::vector<Value> out;
    for (const auto& e : items) {
      bool seen = false;
      for (const auto& o : out) seen = seen || strict_equal(o, e);
      if (!seen) out.push_back(e);
    }
    return Value::list(std::move(out));
  }
  if (name == "sort") {
    const Value* reverse = arg_or(args, 0, "reverse");
    const Value* case_sensitive = arg_or(args, 1, "case_sensitive");
    const Value* attribute = arg_or(args, 2, "attribute");
    std::string path;
    if (attribute && attribute->type == Type::String)
      path = attribute->str;
    else if (attribute && attribute->type == Type::Int)
      path = std::to_string(attribute->integer);
    else if (attribute && attribute->type != Type::Null)
      fail(line, "sort attribute must be a string or an integer");
    std::vector<Value> out = items;
    const bool rev = reverse && truthy(*reverse), cs = case_sensitive && truthy(*case_sensitive);
    std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
      const int c = compare(path.empty() ? a : attribute_path(a, path),
                            path.empty() ? b : attribute_path(b, path), cs, line);
      return rev ? c > 0 : c < 0;
    });
    return Value::list(std::move(out));
  }
  if (name == "selectattr" || name == "rejectattr") {
    const bool select = name == "selectattr";
    for (size_t i = 1; i < n.kids.size(); ++i)
      if (n.kids[i]->kind != NodeKind::StringLit)
        fail(line, name + " arguments must be string literals");
    if (args.positional.empty()) fail(line, name + " needs an attribute name");
    for (const auto& e : items)
      if (e.type != Type::Object && e.type != Type::Namespace)
        fail(line, name + " applies to a list of mappings");
    std::vector<Value> out;
    for (const auto& e : items) {
      const Value* a = e.object->find(args.positional[0].str);
      bool result = false;
      if (a) {
        if (args.positional.size() < 2)
          result = truthy(*a);
        else if (args.positional[1].str == "equalto" || args.positional[1].str == "eq" ||
                 args.positional[1].str == "==")
          result = args.positional.size() > 2 && strict_equal(*a, args.positional[2]);
        else
          result = apply_test(args.positional[1].str, *a, line);
      }
      if (result == select) out.push_back(e);
    }
    return Value::list(std::move(out));
  }
  if (name == "map") {
    const Value* attribute = args.keyword("attribute");
    if (!attribute) fail(line, "map() is supported only with attribute=");
    if (attribute->type != Type::String) fail(line, "map attribute must be a string");
    const Value* fallback = args.keyword("default");
    std::vector<Value> out;
    for (const auto& e : items) {
      if (e.type != Type::Object && e.type != Type::Namespace)
        fail(line, "map(attribute=) applies to a list of mappings");
      Value v = attribute_path(e, attribute->str);
      out.push_back(v.type == Type::Undefined && fallback ? *fallback : v);
    }
    return Value::list(std::move(out));
  }
  fail(line, "filter '" + name + "' is not supported on a list");
}

const Value* arg_or(const Args& args, size_t i, const char* keyword) {
  return i < args.positional.size() ? &args.positional[i] : args.keyword(keyword);
}

}  // namespace

}  // namespace distil::text::jinja
