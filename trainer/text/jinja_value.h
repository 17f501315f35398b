// Internal to the Jinja engine: runtime values, with the types and conversions of
// @huggingface/jinja's runtime (src/runtime.ts): integers and floats are distinct, objects keep
// their key order, lists and namespaces are shared by reference, and `undefined` is a value.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace distil::text::jinja {

enum class Type { Undefined, Null, Bool, Int, Float, String, Array, Object, Namespace, Function };

struct Value;
struct ObjectData;
struct FunctionData;

struct Value {
  Type type = Type::Undefined;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  std::string str;
  std::shared_ptr<std::vector<Value>> array;  // Array
  std::shared_ptr<ObjectData> object;         // Object, Namespace
  std::shared_ptr<FunctionData> function;

  static Value undefined() { return {}; }
  static Value null() { return make(Type::Null); }
  static Value of(bool b) {
    Value v = make(Type::Bool);
    v.boolean = b;
    return v;
  }
  static Value of_int(int64_t i) {
    Value v = make(Type::Int);
    v.integer = i;
    return v;
  }
  static Value of_float(double d) {
    Value v = make(Type::Float);
    v.real = d;
    return v;
  }
  static Value of(std::string s) {
    Value v = make(Type::String);
    v.str = std::move(s);
    return v;
  }
  static Value list(std::vector<Value> items = {});
  static Value dict();
  static Value namespace_();
  static Value make(Type t) {
    Value v;
    v.type = t;
    return v;
  }
  bool is_number() const { return type == Type::Int || type == Type::Float; }
  double number() const { return type == Type::Int ? static_cast<double>(integer) : real; }
};

struct ObjectData {
  std::vector<std::pair<std::string, Value>> entries;  // in order
  const Value* find(const std::string& key) const {
    for (const auto& [k, v] : entries)
      if (k == key) return &v;
    return nullptr;
  }
  void set(const std::string& key, Value value) {
    for (auto& [k, v] : entries)
      if (k == key) {
        v = std::move(value);
        return;
      }
    entries.emplace_back(key, std::move(value));
  }
};

struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  const Value* keyword(const std::string& name) const {
    for (const auto& [k, v] : keywords)
      if (k == name) return &v;
    return nullptr;
  }
};

struct FunctionData {
  std::string name;  // for error messages
  std::function<Value(const Args&, int line)> call;
};

inline Value Value::list(std::vector<Value> items) {
  Value v = make(Type::Array);
  v.array = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
inline Value Value::dict() {
  Value v = make(Type::Object);
  v.object = std::make_shared<ObjectData>();
  return v;
}
inline Value Value::namespace_() {
  Value v = make(Type::Namespace);
  v.object = std::make_shared<ObjectData>();
  return v;
}

const char* type_name(Type t);
// JSON (ordered, as parsed) -> value, ordering object keys as JavaScript's Object.entries does.
// Throws Error past `max_depth` levels of nesting.
Value from_json(const nlohmann::ordered_json& j, int max_depth, int depth = 0);

// JavaScript's String(number) and JSON.stringify(string).
std::string js_number_to_string(double value);
std::string json_quote(const std::string& s, bool ensure_ascii);
// How {{ value }} prints a float: 1.0, 2.5, -0.0 (FloatValue.toString).
std::string float_display(double value);
// The length of a string as JavaScript counts it (UTF-16 code units).
int64_t utf16_length(const std::string& s);
// The code points of UTF-8 text, each as its own string (invalid bytes stand alone).
std::vector<std::string> code_points(const std::string& s);

struct JsonOptions {
  int indent = 0;  // 0: one line
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool custom_separators = false;
  std::string item_separator, key_separator;
};
// @huggingface/jinja's toJSON; `undefined_as_null` false prints undefined as `undefined` (as
// printing a list does). Throws Error for functions and past `max_depth` levels.
std::string to_json(const Value& v, const JsonOptions& options, bool undefined_as_null,
                    int max_depth, int depth = 0);

}  // namespace distil::text::jinja
