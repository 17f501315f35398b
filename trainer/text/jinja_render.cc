// Jinja chat templates, back end: evaluating the syntax tree with the semantics of
// @huggingface/jinja's Interpreter (src/runtime.ts): its operators, truthiness, scoping (a for
// loop has its own scope, `if` does not), filters, tests and the methods of strings and dicts.
// What it does not implement is an Error naming the construct and line, never a guess.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <optional>
#include <ctime>
#include <unordered_map>

#include "trainer/text/jinja_ast.h"
#include "trainer/text/jinja_value.h"

namespace distil::text::jinja {

RaisedException::RaisedException(const std::string& message, int line)
    : Error("chat template line " + std::to_string(line) + ": raise_exception: " + message), message_(message) {}

namespace {

[[noreturn]] void fail(int line, const std::string& what) {
  throw Error("chat template line " + std::to_string(line) + ": " + what);
}

struct BreakSignal {
  int line;
};
struct ContinueSignal {
  int line;
};

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get())
      if (auto it = s->vars.find(name); it != s->vars.end()) return &it->second;
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

bool truthy(const Value& v) {
  switch (v.type) {
    case Type::Undefined:
    case Type::Null: return false;
    case Type::Bool: return v.boolean;
    case Type::Int: return v.integer != 0;
    case Type::Float: return v.real != 0 && !std::isnan(v.real);
    case Type::String: return !v.str.empty();
    case Type::Array: return !v.array->empty();
    case Type::Object: return !v.object->entries.empty();
    case Type::Namespace:
    case Type::Function: return true;
  }
  return false;
}

// JavaScript's ToNumber for a string (used by ==, which @huggingface/jinja leaves to JavaScript).
double js_string_to_number(const std::string& s) {
  const std::string t(js_trim_end(js_trim_start(s)));
  if (t.empty()) return 0;
  if (t == "Infinity" || t == "+Infinity") return INFINITY;
  if (t == "-Infinity") return -INFINITY;
  if (t.size() > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
    if (t.find_first_not_of("0123456789abcdefABCDEF", 2) != std::string::npos) return NAN;
    return static_cast<double>(std::stoull(t.substr(2), nullptr, 16));
  }
  if (t.find_first_not_of("0123456789+-.eE") != std::string::npos) return NAN;
  char* end = nullptr;
  const double d = std::strtod(t.c_str(), &end);
  return end == t.c_str() + t.size() ? d : NAN;
}

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
  if ((numeric(a) || a.type == Type::String) && (numeric(b) || b.type == Type::String)) return as_number(a) == as_number(b);
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
    case Type::Null: return true;
    case Type::Bool: return a.boolean == b.boolean;
    case Type::String: return a.str == b.str;
    case Type::Array: return a.array == b.array;
    case Type::Object:
    case Type::Namespace: return a.object == b.object;
    case Type::Function: return a.function == b.function;
    default: return false;
  }
}

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

// Python-style slice bounds over n items (utils.ts `slice`).
std::vector<int64_t> slice_indices(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step) {
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

class Renderer {
 public:
  explicit Renderer(const Limits& limits) : limits_(limits) {}

  std::string run(const std::vector<NodePtr>& body, const nlohmann::ordered_json& context) {
    auto globals = std::make_shared<Scope>();
    install_globals(*globals);
    if (!context.is_object() && !context.is_null()) throw Error("chat template context must be a JSON object");
    if (context.is_object())
      for (const auto& [key, value] : context.items()) globals->vars[key] = from_json(value, limits_.max_depth);
    try {
      return render_block(body, globals);
    } catch (const BreakSignal& b) {
      fail(b.line, "{% break %} outside a for loop");
    } catch (const ContinueSignal& c) {
      fail(c.line, "{% continue %} outside a for loop");
    }
  }

 private:
  struct DepthGuard {
    Renderer& r;
    DepthGuard(Renderer& renderer, int line) : r(renderer) {
      if (++r.depth_ > r.limits_.max_depth)
        fail(line, "rendering nests deeper than " + std::to_string(r.limits_.max_depth) + " levels (runaway recursion?)");
    }
    ~DepthGuard() { --r.depth_; }
  };

  void step(int line) {
    if (++steps_ > limits_.max_steps)
      fail(line, "the template did more than " + std::to_string(limits_.max_steps) + " evaluation steps (runaway loop?)");
  }
  void check_size(size_t bytes, int line) const {
    if (bytes > limits_.max_output_bytes)
      fail(line, "a rendered string or list exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
  }

  // ---------------------------------------------------------------- statements

  std::string render_block(const std::vector<NodePtr>& body, const ScopePtr& scope) {
    std::string out;
    for (const auto& node : body) {
      render_statement(*node, scope, out);
      check_size(out.size(), node->line);
    }
    return out;
  }

  void render_statement(const Node& n, const ScopePtr& scope, std::string& out) {
    DepthGuard guard(*this, n.line);
    step(n.line);
    switch (n.kind) {
      case NodeKind::Text: out += n.str; return;
      case NodeKind::Output: {
        const Value v = eval(*n.kids[0], scope);
        if (v.type != Type::Null && v.type != Type::Undefined) out += display(v, n.line);
        return;
      }
      case NodeKind::If:
        out += render_block(truthy(eval(*n.kids[0], scope)) ? n.body : n.alt, scope);
        return;
      case NodeKind::For: out += render_for(n, scope); return;
      case NodeKind::Set: execute_set(n, scope); return;
      case NodeKind::Macro: define_macro(n, scope); return;
      case NodeKind::Filter:
        if (!n.kids[0]) {  // {% filter %} block
          const Value v = apply_filter(n, Value::of(render_block(n.body, scope)), scope);
          if (v.type != Type::Null && v.type != Type::Undefined) out += display(v, n.line);
          return;
        }
        break;
      case NodeKind::Break: throw BreakSignal{n.line};
      case NodeKind::Continue: throw ContinueSignal{n.line};
      default: break;
    }
    const Value v = eval(n, scope);
    if (v.type != Type::Null && v.type != Type::Undefined) out += display(v, n.line);
  }

  std::string render_for(const Node& n, const ScopePtr& outer) {
    auto scope = std::make_shared<Scope>();
    scope->parent = outer;
    const Node& var = *n.kids[0];
    const Node* iterable_node = n.kids[1].get();
    const Node* condition = nullptr;
    if (iterable_node->kind == NodeKind::Select) {
      condition = iterable_node->kids[1].get();
      iterable_node = iterable_node->kids[0].get();
    }
    Value iterable = eval(*iterable_node, scope);
    std::vector<Value> candidates;
    if (iterable.type == Type::Array) {
      candidates = *iterable.array;
    } else if (iterable.type == Type::Object) {
      for (const auto& [k, v] : iterable.object->entries) candidates.push_back(Value::of(k));
    } else {
      fail(n.line, std::string("{% for %} needs a list or a mapping to iterate, got ") + type_name(iterable.type));
    }
    std::vector<Value> items;
    for (const Value& item : candidates) {
      step(n.line);
      if (var.kind == NodeKind::TupleLit) {
        if (item.type != Type::Array) fail(n.line, std::string("cannot unpack a ") + type_name(item.type) + " into the loop variables");
        if (item.array->size() != var.kids.size())
          fail(n.line, std::string("too ") + (var.kids.size() > item.array->size() ? "few" : "many") + " items to unpack");
      }
      if (condition) {
        auto test_scope = std::make_shared<Scope>();
        test_scope->parent = scope;
        bind(var, item, *test_scope);
        if (!truthy(eval(*condition, test_scope))) continue;
      }
      items.push_back(item);
    }
    std::string out;
    bool iterated = false;
    const int64_t count = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < count; ++i) {
      step(n.line);
      Value loop = Value::dict();
      loop.object->entries = {{"index", Value::of_int(i + 1)},
                              {"index0", Value::of_int(i)},
                              {"revindex", Value::of_int(count - i)},
                              {"revindex0", Value::of_int(count - i - 1)},
                              {"first", Value::of(i == 0)},
                              {"last", Value::of(i == count - 1)},
                              {"length", Value::of_int(count)},
                              {"previtem", i > 0 ? items[i - 1] : Value::undefined()},
                              {"nextitem", i + 1 < count ? items[i + 1] : Value::undefined()}};
      scope->vars["loop"] = std::move(loop);
      bind(var, items[i], *scope);
      try {
        out += render_block(n.body, scope);  // an iteration cut short by break/continue adds nothing
      } catch (const ContinueSignal&) {
        continue;
      } catch (const BreakSignal&) {
        break;
      }
      check_size(out.size(), n.line);
      iterated = true;
    }
    if (!iterated) out += render_block(n.alt, scope);
    return out;
  }

  void bind(const Node& var, const Value& item, Scope& scope) {
    if (var.kind == NodeKind::Ident) {
      scope.vars[var.str] = item;
      return;
    }
    for (size_t j = 0; j < var.kids.size(); ++j) {
      if (var.kids[j]->kind != NodeKind::Ident) fail(var.line, "loop variables must be names");
      scope.vars[var.kids[j]->str] = j < item.array->size() ? (*item.array)[j] : Value::undefined();
    }
  }

  void execute_set(const Node& n, const ScopePtr& scope) {
    Value rhs = n.kids[1] ? eval(*n.kids[1], scope) : Value::of(render_block(n.body, scope));
    const Node& target = *n.kids[0];
    if (target.kind == NodeKind::Ident) {
      scope->vars[target.str] = std::move(rhs);
    } else if (target.kind == NodeKind::TupleLit) {
      if (rhs.type != Type::Array) fail(n.line, std::string("cannot unpack a ") + type_name(rhs.type) + " in {% set %}");
      if (rhs.array->size() != target.kids.size())
        fail(n.line, std::string("too ") + (target.kids.size() > rhs.array->size() ? "few" : "many") + " items to unpack in {% set %}");
      for (size_t i = 0; i < target.kids.size(); ++i) {
        if (target.kids[i]->kind != NodeKind::Ident) fail(n.line, "{% set %} can unpack only into names");
        scope->vars[target.kids[i]->str] = (*rhs.array)[i];
      }
    } else {  // Member
      const Value object = eval(*target.kids[0], scope);
      if (object.type != Type::Namespace)
        fail(n.line, std::string("{% set x.attr = ... %} needs x to be a namespace(), got ") + type_name(object.type));
      if (target.flag || target.kids[1]->kind != NodeKind::Ident)
        fail(n.line, "{% set %} on a namespace takes a plain attribute name (ns.name)");
      object.object->set(target.kids[1]->str, std::move(rhs));
    }
  }

  void define_macro(const Node& n, const ScopePtr& scope) {
    Value fn = Value::make(Type::Function);
    fn.function = std::make_shared<FunctionData>();
    fn.function->name = "macro " + n.str;
    const Node* node = &n;
    std::weak_ptr<Scope> weak = scope;  // the macro lives in the scope: no ownership cycle
    fn.function->call = [this, node, weak](const Args& args, int line) -> Value {
      ScopePtr definition = weak.lock();
      if (!definition) fail(line, "macro '" + node->str + "' called after its scope ended");
      DepthGuard guard(*this, line);
      auto local = std::make_shared<Scope>();
      local->parent = definition;
      std::vector<std::pair<std::string, const Node*>> defaults;
      std::vector<std::string> unused_keywords;
      for (const auto& [k, v] : args.keywords) unused_keywords.push_back(k);
      for (size_t i = 0; i < node->kids.size(); ++i) {
        const Node& param = *node->kids[i];
        const std::string& name = param.str;
        if (i < args.positional.size()) {
          local->vars[name] = args.positional[i];
        } else if (const Value* kw = args.keyword(name)) {
          local->vars[name] = *kw;
          unused_keywords.erase(std::find(unused_keywords.begin(), unused_keywords.end(), name));
        } else {
          local->vars[name] = Value::undefined();
          if (param.kind == NodeKind::KwArg) defaults.emplace_back(name, param.kids[0].get());
        }
      }
      if (!unused_keywords.empty())
        fail(line, "macro '" + node->str + "' takes no keyword argument '" + unused_keywords[0] + "'");
      if (args.positional.size() > node->kids.size())
        fail(line, "macro '" + node->str + "' takes at most " + std::to_string(node->kids.size()) + " argument(s)");
      for (const auto& [name, expr] : defaults) local->vars[name] = eval(*expr, local);
      return Value::of(render_block(node->body, local));
    };
    scope->vars[n.str] = std::move(fn);
  }

  // ---------------------------------------------------------------- expressions

  Value eval(const Node& n, const ScopePtr& scope) {
    DepthGuard guard(*this, n.line);
    step(n.line);
    switch (n.kind) {
      case NodeKind::StringLit: return Value::of(n.str);
      case NodeKind::IntLit: return Value::of_int(n.integer);
      case NodeKind::FloatLit: return Value::of_float(n.real);
      case NodeKind::Ident: {
        const Value* v = scope->find(n.str);
        return v ? *v : Value::undefined();
      }
      case NodeKind::ArrayLit:
      case NodeKind::TupleLit: {
        std::vector<Value> items;
        for (const auto& k : n.kids) items.push_back(eval(*k, scope));
        return Value::list(std::move(items));
      }
      case NodeKind::ObjectLit: {
        Value obj = Value::dict();
        for (size_t i = 0; i + 1 < n.kids.size(); i += 2) {
          Value key = eval(*n.kids[i], scope);
          if (key.type != Type::String) fail(n.line, std::string("dict literal keys must be strings, got ") + type_name(key.type));
          obj.object->set(key.str, eval(*n.kids[i + 1], scope));
        }
        return obj;
      }
      case NodeKind::Member: return eval_member(n, scope);
      case NodeKind::Call: return eval_call(n, scope);
      case NodeKind::Filter: return apply_filter(n, eval(*n.kids[0], scope), scope);
      case NodeKind::Test: {
        const bool result = apply_test(n.str, eval(*n.kids[0], scope), n.line);
        return Value::of(n.flag ? !result : result);
      }
      case NodeKind::Unary: {
        const Value v = eval(*n.kids[0], scope);
        if (n.str == "not") return Value::of(!truthy(v));
        const int64_t sign = n.str == "-" ? -1 : 1;
        if (v.type == Type::Float) return Value::of_float(static_cast<double>(sign) * v.real);
        if (v.type == Type::Int) {
          if (v.integer == INT64_MIN && sign < 0) fail(n.line, "integer overflow in unary minus");
          return Value::of_int(sign * v.integer);
        }
        if (v.type == Type::Bool) return Value::of_int(sign * (v.boolean ? 1 : 0));
        fail(n.line, "unary " + n.str + " needs a number, got " + type_name(v.type));
      }
      case NodeKind::Binary: return eval_binary(n, scope);
      case NodeKind::Ternary:
        return truthy(eval(*n.kids[0], scope)) ? eval(*n.kids[1], scope) : eval(*n.kids[2], scope);
      case NodeKind::Select:
        return truthy(eval(*n.kids[1], scope)) ? eval(*n.kids[0], scope) : Value::undefined();
      case NodeKind::Slice: fail(n.line, "a slice outside a subscript");
      case NodeKind::KwArg: fail(n.line, "keyword argument " + n.str + "= outside a call");
      default: fail(n.line, "a statement where an expression is expected");
    }
  }

  std::string display(const Value& v, int line) {
    switch (v.type) {
      case Type::Undefined:
      case Type::Null: return "";
      case Type::Bool: return v.boolean ? "true" : "false";
      case Type::Int: return std::to_string(v.integer);
      case Type::Float: return float_display(v.real);
      case Type::String: return v.str;
      case Type::Function: fail(line, "cannot print " + v.function->name + " (call it)");
      default: return json(v, JsonOptions{}, false, line);
    }
  }

  std::string json(const Value& v, const JsonOptions& o, bool undefined_as_null, int line) {
    try {
      return to_json(v, o, undefined_as_null, limits_.max_depth);
    } catch (const Error& e) {
      fail(line, e.what());
    }
  }

  // The text of a primitive in `+` and `~` (JavaScript's value.toString(): floats print without .0).
  std::string concat_text(const Value& v, int line) {
    switch (v.type) {
      case Type::String: return v.str;
      case Type::Int: return std::to_string(v.integer);
      case Type::Float: return js_number_to_string(v.real);
      case Type::Bool: return v.boolean ? "true" : "false";
      default: fail(line, std::string("cannot concatenate a ") + type_name(v.type) + " as text");
    }
  }

  Value eval_member(const Node& n, const ScopePtr& scope) {
    const Value object = eval(*n.kids[0], scope);
    const Node& prop_node = *n.kids[1];
    if (n.flag && prop_node.kind == NodeKind::Slice) return eval_slice(object, prop_node, scope);
    Value prop;
    if (n.flag) prop = eval(prop_node, scope);
    else if (prop_node.kind == NodeKind::IntLit) prop = Value::of_int(prop_node.integer);
    else prop = Value::of(prop_node.str);
    const auto need_string = [&] {
      if (prop.type != Type::String)
        fail(n.line, std::string("a ") + type_name(object.type) + " is indexed by a string, not a " + type_name(prop.type));
    };
    if (object.type == Type::Object || object.type == Type::Namespace) {
      need_string();
      if (const Value* v = object.object->find(prop.str)) return *v;
      if (object.type == Type::Object) return dict_method(object, prop.str);
      return Value::undefined();
    }
    if (object.type == Type::Array || object.type == Type::String) {
      if (prop.type == Type::Int) {
        if (object.type == Type::Array) {
          const int64_t size = static_cast<int64_t>(object.array->size());
          const int64_t i = prop.integer < 0 ? size + prop.integer : prop.integer;
          return i >= 0 && i < size ? (*object.array)[static_cast<size_t>(i)] : Value::undefined();
        }
        const auto chars = code_points(object.str);
        const int64_t size = static_cast<int64_t>(chars.size());
        const int64_t i = prop.integer < 0 ? size + prop.integer : prop.integer;
        return i >= 0 && i < size ? Value::of(chars[static_cast<size_t>(i)]) : Value::undefined();
      }
      if (prop.type != Type::String)
        fail(n.line, std::string("a ") + type_name(object.type) + " is indexed by an integer or a name, not a " + type_name(prop.type));
      if (object.type == Type::Array) return prop.str == "length" ? Value::of_int(static_cast<int64_t>(object.array->size())) : Value::undefined();
      return string_method(object, prop.str);
    }
    need_string();
    return Value::undefined();  // numbers, booleans, none and undefined have no attributes
  }

  Value eval_slice(const Value& object, const Node& slice, const ScopePtr& scope) {
    std::optional<int64_t> bounds[3];
    for (int i = 0; i < 3; ++i) {
      if (!slice.kids[static_cast<size_t>(i)]) continue;
      const Value v = eval(*slice.kids[static_cast<size_t>(i)], scope);
      if (v.type == Type::Undefined) continue;
      if (v.type != Type::Int) fail(slice.line, std::string("slice bounds must be integers, got ") + type_name(v.type));
      bounds[i] = v.integer;
    }
    const int64_t step = bounds[2].value_or(1);
    if (object.type == Type::Array) {
      std::vector<Value> out;
      for (int64_t i : slice_indices(static_cast<int64_t>(object.array->size()), bounds[0], bounds[1], step))
        out.push_back((*object.array)[static_cast<size_t>(i)]);
      return Value::list(std::move(out));
    }
    if (object.type == Type::String) {
      const auto chars = code_points(object.str);
      std::string out;
      for (int64_t i : slice_indices(static_cast<int64_t>(chars.size()), bounds[0], bounds[1], step))
        out += chars[static_cast<size_t>(i)];
      return Value::of(std::move(out));
    }
    fail(slice.line, std::string("only lists and strings can be sliced, got ") + type_name(object.type));
  }

  Args eval_args(const std::vector<NodePtr>& kids, size_t first, const ScopePtr& scope) {
    Args args;
    for (size_t i = first; i < kids.size(); ++i)
      if (kids[i]->kind != NodeKind::KwArg) args.positional.push_back(eval(*kids[i], scope));
    for (size_t i = first; i < kids.size(); ++i) {
      if (kids[i]->kind != NodeKind::KwArg) continue;
      if (args.keyword(kids[i]->str)) fail(kids[i]->line, "keyword argument '" + kids[i]->str + "' given twice");
      args.keywords.emplace_back(kids[i]->str, eval(*kids[i]->kids[0], scope));
    }
    return args;
  }

  static std::string describe_callee(const Node& callee) {
    if (callee.kind == NodeKind::Ident) return "'" + callee.str + "'";
    if (callee.kind == NodeKind::Member && !callee.flag && callee.kids[1]->kind == NodeKind::Ident)
      return "method '" + callee.kids[1]->str + "'";
    return "the expression";
  }

  Value eval_call(const Node& n, const ScopePtr& scope) {
    const Args args = eval_args(n.kids, 1, scope);
    const Value fn = eval(*n.kids[0], scope);
    if (fn.type != Type::Function)
      fail(n.line, "cannot call " + describe_callee(*n.kids[0]) + ": it is " +
                       (fn.type == Type::Undefined ? std::string("undefined (not supported, or misspelt?)")
                                                   : std::string("a ") + type_name(fn.type)));
    return fn.function->call(args, n.line);
  }

  Value eval_binary(const Node& n, const ScopePtr& scope) {
    const std::string& op = n.str;
    const Value left = eval(*n.kids[0], scope);
    if (op == "and") return truthy(left) ? eval(*n.kids[1], scope) : left;
    if (op == "or") return truthy(left) ? left : eval(*n.kids[1], scope);
    const Value right = eval(*n.kids[1], scope);
    if (op == "==") return Value::of(loose_equal(left, right));
    if (op == "!=") return Value::of(!loose_equal(left, right));
    const auto unknown = [&]() -> Value {
      fail(n.line, "operator '" + op + "' is not supported between a " + type_name(left.type) + " and a " + type_name(right.type));
    };
    if (left.is_number() && right.is_number() && op != "~" && op != "**") {
      const bool is_float = left.type == Type::Float || right.type == Type::Float;
      const double a = left.number(), b = right.number();
      if (op == "+" || op == "-" || op == "*") {
        if (!is_float) {
          int64_t r;
          const bool overflow = op == "+"   ? __builtin_add_overflow(left.integer, right.integer, &r)
                                : op == "-" ? __builtin_sub_overflow(left.integer, right.integer, &r)
                                            : __builtin_mul_overflow(left.integer, right.integer, &r);
          if (overflow) fail(n.line, "integer overflow in '" + op + "'");
          return Value::of_int(r);
        }
        return Value::of_float(op == "+" ? a + b : op == "-" ? a - b : a * b);
      }
      if (op == "/") return Value::of_float(a / b);
      if (op == "//" || op == "%") {
        if (!is_float) {
          if (right.integer == 0) fail(n.line, "integer division or modulo by zero");
          if (left.integer == INT64_MIN && right.integer == -1) fail(n.line, "integer overflow in '" + op + "'");
          if (op == "%") return Value::of_int(left.integer % right.integer);  // the sign of the dividend, as in JavaScript
          return Value::of_int(static_cast<int64_t>(std::floor(a / b)));
        }
        return Value::of_float(op == "%" ? std::fmod(a, b) : std::floor(a / b));
      }
      if (op == "<") return Value::of(a < b);
      if (op == ">") return Value::of(a > b);
      if (op == "<=") return Value::of(a <= b);
      if (op == ">=") return Value::of(a >= b);
      return unknown();
    }
    if (left.type == Type::Undefined || right.type == Type::Undefined) {
      if (right.type == Type::Undefined && (op == "in" || op == "not in")) return Value::of(op == "not in");
      if (op == "~" && left.type != Type::Null && right.type != Type::Null) {
        const std::string l = left.type == Type::Undefined ? "" : concat_text(left, n.line);
        const std::string r = right.type == Type::Undefined ? "" : concat_text(right, n.line);
        return Value::of(l + r);
      }
      fail(n.line, "operator '" + op + "' on an undefined value (a missing variable or field?)");
    }
    if (left.type == Type::Null || right.type == Type::Null) fail(n.line, "operator '" + op + "' on none");
    if (op == "~") {
      std::string s = concat_text(left, n.line) + concat_text(right, n.line);
      check_size(s.size(), n.line);
      return Value::of(std::move(s));
    }
    const auto numeric_like = [](const Value& v) { return v.is_number() || v.type == Type::Bool; };
    if (op == "**" && numeric_like(left) && numeric_like(right)) {
      const double a = left.type == Type::Bool ? (left.boolean ? 1 : 0) : left.number();
      const double b = right.type == Type::Bool ? (right.boolean ? 1 : 0) : right.number();
      if (a == 0 && b < 0) fail(n.line, "0.0 cannot be raised to a negative power");
      const double r = std::pow(a, b);
      if (!std::isfinite(r)) fail(n.line, "exponentiation result is not a finite real number");
      const bool is_float = left.type == Type::Float || right.type == Type::Float || b < 0;
      if (!is_float && std::fabs(r) >= 9.2e18) fail(n.line, "integer overflow in '**'");
      return is_float ? Value::of_float(r) : Value::of_int(static_cast<int64_t>(r));
    }
    if (left.type == Type::Array && right.type == Type::Array) {
      if (op != "+") return unknown();
      check_size((left.array->size() + right.array->size()) * sizeof(Value), n.line);
      std::vector<Value> joined = *left.array;
      joined.insert(joined.end(), right.array->begin(), right.array->end());
      return Value::list(std::move(joined));
    }
    if (right.type == Type::Array && (op == "in" || op == "not in")) {
      bool member = false;
      for (const auto& e : *right.array) member = member || strict_equal(e, left);
      return Value::of(op == "in" ? member : !member);
    }
    if (right.type == Type::Array) return unknown();
    if ((left.type == Type::String || right.type == Type::String) && op == "+") {
      std::string s = concat_text(left, n.line) + concat_text(right, n.line);
      check_size(s.size(), n.line);
      return Value::of(std::move(s));
    }
    if (left.type == Type::String && right.type == Type::String && (op == "in" || op == "not in")) {
      const bool found = right.str.find(left.str) != std::string::npos;
      return Value::of(op == "in" ? found : !found);
    }
    if (left.type == Type::String && right.type == Type::Object && (op == "in" || op == "not in")) {
      const bool found = right.object->find(left.str) != nullptr;
      return Value::of(op == "in" ? found : !found);
    }
    return unknown();
  }

  // ---------------------------------------------------------------- functions

  static Value make_function(std::string name, std::function<Value(const Args&, int)> call) {
    Value v = Value::make(Type::Function);
    v.function = std::make_shared<FunctionData>();
    v.function->name = std::move(name);
    v.function->call = std::move(call);
    return v;
  }

  void install_globals(Scope& g) {
    g.vars["true"] = g.vars["True"] = Value::of(true);
    g.vars["false"] = g.vars["False"] = Value::of(false);
    g.vars["none"] = g.vars["None"] = Value::null();
    g.vars["raise_exception"] = make_function("raise_exception", [](const Args& a, int line) -> Value {
      std::string message = a.positional.empty() ? "" : a.positional[0].type == Type::String ? a.positional[0].str : "";
      if (!a.positional.empty() && a.positional[0].type != Type::String && a.positional[0].type != Type::Undefined)
        message = type_name(a.positional[0].type);
      throw RaisedException(message, line);
    });
    g.vars["namespace"] = make_function("namespace", [](const Args& a, int line) {
      Value ns = Value::namespace_();
      if (a.positional.size() > 1) fail(line, "namespace() takes at most one positional argument");
      if (a.positional.size() == 1) {
        const Value& src = a.positional[0];
        if (src.type != Type::Object) fail(line, std::string("namespace() copies a mapping, got ") + type_name(src.type));
        for (const auto& [k, v] : src.object->entries) ns.object->set(k, v);
      }
      for (const auto& [k, v] : a.keywords) ns.object->set(k, v);
      return ns;
    });
    g.vars["range"] = make_function("range", [this](const Args& a, int line) {
      if (a.positional.empty() || a.positional.size() > 3 || !a.keywords.empty())
        fail(line, "range() takes one to three integer arguments");
      for (const auto& v : a.positional)
        if (v.type != Type::Int) fail(line, std::string("range() arguments must be integers, got ") + type_name(v.type));
      int64_t start = 0, stop = a.positional[0].integer, stride = 1;
      if (a.positional.size() >= 2) start = a.positional[0].integer, stop = a.positional[1].integer;
      if (a.positional.size() == 3) stride = a.positional[2].integer;
      if (stride == 0) fail(line, "range() step must not be zero");
      std::vector<Value> out;
      for (int64_t i = start; stride > 0 ? i < stop : i > stop; i += stride) {
        step(line);
        out.push_back(Value::of_int(i));
        if (__builtin_add_overflow(i, stride, &i)) break;
        i -= stride;
      }
      return Value::list(std::move(out));
    });
    g.vars["strftime_now"] = make_function("strftime_now", [](const Args& a, int line) {
      if (a.positional.size() != 1 || a.positional[0].type != Type::String) fail(line, "strftime_now() takes a format string");
      return Value::of(strftime_now(a.positional[0].str));
    });
  }

  // The local time with the directives @huggingface/jinja implements (%Y %m %d %b %B %H %M %%);
  // other directives are left as written, as it does.
  static std::string strftime_now(const std::string& format) {
    static const char* const kMonths[] = {"January", "February", "March",     "April",   "May",      "June",
                                          "July",    "August",   "September", "October", "November", "December"};
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
        case 'Y': out += std::to_string(t.tm_year + 1900); break;
        case 'm': out += pad2(t.tm_mon + 1); break;
        case 'd': out += pad2(t.tm_mday); break;
        case 'b': out += std::string(kMonths[t.tm_mon]).substr(0, 3); break;
        case 'B': out += kMonths[t.tm_mon]; break;
        case 'H': out += pad2(t.tm_hour); break;
        case 'M': out += pad2(t.tm_min); break;
        case '%': out += '%'; break;
        default: out += format.substr(i, 2);
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

  Value dict_method(const Value& object, const std::string& name) {
    if (name == "get")
      return make_function("dict.get", [object](const Args& a, int line) {
        if (a.positional.empty() || a.positional[0].type != Type::String) fail(line, "dict.get() takes a string key");
        if (const Value* v = object.object->find(a.positional[0].str)) return *v;
        return a.positional.size() > 1 ? a.positional[1] : Value::null();
      });
    if (name == "items") return make_function("dict.items", [this, object](const Args&, int) { return items_of(object); });
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

  Value string_method(const Value& s, const std::string& name) {
    const std::string& text = s.str;
    if (name == "length") return Value::of_int(utf16_length(text));
    const auto method = [&](std::function<Value(const Args&, int)> f) { return make_function("str." + name, std::move(f)); };
    // As in @huggingface/jinja, strip/lstrip/rstrip ignore an argument and remove all
    // whitespace (Python's str.strip('\n') would remove only newlines).
    if (name == "strip") return method([text](const Args&, int) { return Value::of(trim(text)); });
    if (name == "lstrip") return method([text](const Args&, int) { return Value::of(std::string(js_trim_start(text))); });
    if (name == "rstrip") return method([text](const Args&, int) { return Value::of(std::string(js_trim_end(text))); });
    if (name == "upper") return method([text](const Args&, int) { return Value::of(ascii_upper(text)); });
    if (name == "lower") return method([text](const Args&, int) { return Value::of(ascii_lower(text)); });
    if (name == "title") return method([text](const Args&, int) { return Value::of(title_case(text)); });
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
          return start ? text.compare(0, p.size(), p) == 0 : text.compare(text.size() - p.size(), p.size(), p) == 0;
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
        const Value sep = !a.positional.empty() ? a.positional[0] : a.keyword("sep") ? *a.keyword("sep") : Value::null();
        const Value max = a.positional.size() > 1 ? a.positional[1] : a.keyword("maxsplit") ? *a.keyword("maxsplit") : Value::of_int(-1);
        if (sep.type != Type::String && sep.type != Type::Null) fail(line, "split() separator must be a string or none");
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
          for (size_t at = text.find(sep.str); at != std::string::npos; at = text.find(sep.str, from)) {
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
      return method([this, text](const Args& a, int line) { return Value::of(replace(text, a, line)); });
    return Value::undefined();
  }

  static std::string title_case(const std::string& text) {  // /\b\w/g -> upper (ASCII word characters)
    std::string out = text;
    for (size_t i = 0; i < out.size(); ++i)
      if (is_word_byte(out[i]) && (i == 0 || !is_word_byte(out[i - 1])) && out[i] >= 'a' && out[i] <= 'z')
        out[i] = static_cast<char>(out[i] - 32);
    return out;
  }

  std::string replace(const std::string& text, const Args& a, int line) {
    if (a.positional.size() < 2) fail(line, "replace() needs the old and the new string");
    const Value& from = a.positional[0];
    const Value& to = a.positional[1];
    if (from.type != Type::String || to.type != Type::String) fail(line, "replace() arguments must be strings");
    Value count = a.positional.size() > 2 ? a.positional[2] : a.keyword("count") ? *a.keyword("count") : Value::null();
    if (count.type != Type::Int && count.type != Type::Null) fail(line, "replace() count must be an integer or none");
    int64_t remaining = count.type == Type::Null || count.integer < 0 ? INT64_MAX : count.integer;
    std::string out;
    if (from.str.empty()) {  // an insertion at every code point boundary
      const auto chars = code_points(text);
      for (size_t i = 0; i <= chars.size(); ++i) {
        if (remaining > 0) out += to.str, --remaining;
        if (i < chars.size()) out += chars[i];
        check_size(out.size(), line);
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
      check_size(out.size(), line);
    }
    return out + text.substr(pos);
  }

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
    if (name == "sequence") return v.type == Type::Array || v.type == Type::Object || v.type == Type::String;
    if (name == "lower") return v.type == Type::String && v.str == ascii_lower(v.str);
    if (name == "upper") return v.type == Type::String && v.str == ascii_upper(v.str);
    if (name == "odd" || name == "even") {
      if (v.type != Type::Int) fail(line, "test '" + name + "' needs an integer, got " + type_name(v.type));
      return (v.integer % 2 != 0) == (name == "odd");
    }
    fail(line, "unknown test 'is " + name + "'");
  }

  Value apply_filter(const Node& n, const Value& operand, const ScopePtr& scope) {
    const std::string& name = n.str;
    const int line = n.line;
    const Args args = eval_args(n.kids, 1, scope);
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
      return Value::of(json(operand, o, true, line));
    }
    if (name == "default" || name == "d") {
      const Value fallback = args.positional.empty() ? Value::of(std::string()) : args.positional[0];
      const Value* boolean = arg(1, "boolean");
      if (boolean && boolean->type != Type::Bool) fail(line, "default() boolean flag must be a boolean");
      if (operand.type == Type::Undefined || (boolean && boolean->boolean && !truthy(operand))) return fallback;
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
        if (!std::isfinite(operand.real) || std::fabs(operand.real) >= 9.2e18) fail(line, "int: the float is out of range");
        return Value::of_int(static_cast<int64_t>(std::trunc(operand.real)));
      }
      if (operand.type == Type::Bool) return to_int ? Value::of_int(operand.boolean) : Value::of_float(operand.boolean);
      return unsupported();
    }
    switch (operand.type) {
      case Type::Array: return array_filter(n, operand, args);
      case Type::String: {
        const std::string& s = operand.str;
        if (name == "length" || name == "count") return Value::of_int(utf16_length(s));
        if (name == "upper") return Value::of(ascii_upper(s));
        if (name == "lower") return Value::of(ascii_lower(s));
        if (name == "title") return Value::of(title_case(s));
        if (name == "capitalize") return Value::of(s.empty() ? s : ascii_upper(s.substr(0, 1)) + s.substr(1));
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
        if (name == "replace") return Value::of(replace(s, args, line));
        if (name == "indent") {
          const Value* width = arg(0, "width");
          const Value* first = arg(1, "first");
          const Value* blank = arg(2, "blank");
          std::string pad = "    ";
          if (width && width->type == Type::Int) pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width->integer, 0, 1024)), ' ');
          else if (width && width->type == Type::String) pad = width->str;
          else if (width) fail(line, "indent width must be an integer or a string");
          std::string out;
          size_t start = 0, index = 0;
          while (true) {
            const size_t end = s.find('\n', start);
            const std::string piece = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
            const bool skip = (index == 0 && !(first && truthy(*first))) || (piece.empty() && !(blank && truthy(*blank)));
            out += (index ? "\n" : "") + (skip ? piece : pad + piece);
            check_size(out.size(), line);
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
        if (name == "abs") return operand.type == Type::Int ? (operand.integer == INT64_MIN ? unsupported() : Value::of_int(std::llabs(operand.integer)))
                                                            : Value::of_float(std::fabs(operand.real));
        if (name == "string") return Value::of(operand.type == Type::Int ? std::to_string(operand.integer) : float_display(operand.real));
        return unsupported();
      case Type::Bool:
        if (name == "bool") return operand;
        if (name == "string") return Value::of(operand.boolean ? "true" : "false");
        return unsupported();
      case Type::Object:
        if (name == "items") return items_of(operand);
        if (name == "length" || name == "count") return Value::of_int(static_cast<int64_t>(operand.object->entries.size()));
        if (name == "keys" || name == "values") {
          if (operand.object->find(name)) return unsupported();  // a key would shadow the method in @huggingface/jinja
          return dict_method(operand, name).function->call(args, line);
        }
        if (name == "dictsort") return dictsort(operand, args, line);
        return unsupported();
      default: return unsupported();
    }
  }

  Value dictsort(const Value& object, const Args& args, int line) {
    const auto flag = [&](size_t i, const char* kw) {
      const Value* v = i < args.positional.size() ? &args.positional[i] : args.keyword(kw);
      if (v && v->type != Type::Bool) fail(line, std::string("dictsort ") + kw + " must be a boolean");
      return v && v->boolean;
    };
    const bool case_sensitive = flag(0, "case_sensitive"), reverse = flag(2, "reverse");
    const Value* by = args.positional.size() > 1 ? &args.positional[1] : args.keyword("by");
    const bool by_value = by && by->type == Type::String && by->str == "value";
    if (by && (by->type != Type::String || (by->str != "key" && by->str != "value")))
      fail(line, "dictsort by must be 'key' or 'value'");
    auto entries = object.object->entries;
    std::stable_sort(entries.begin(), entries.end(), [&](const auto& a, const auto& b) {
      const int c = compare(by_value ? a.second : Value::of(a.first), by_value ? b.second : Value::of(b.first), case_sensitive, line);
      return reverse ? c > 0 : c < 0;
    });
    std::vector<Value> out;
    for (auto& [k, v] : entries) out.push_back(Value::list({Value::of(k), v}));
    return Value::list(std::move(out));
  }

  // compareRuntimeValues: numbers (and booleans) with numbers, strings with strings.
  static int compare(const Value& a, const Value& b, bool case_sensitive, int line) {
    const auto numeric = [](const Value& v) { return v.is_number() || v.type == Type::Bool; };
    const auto num = [](const Value& v) { return v.type == Type::Bool ? (v.boolean ? 1.0 : 0.0) : v.number(); };
    if (a.type == Type::Null && b.type == Type::Null) return 0;
    if (a.type == Type::Undefined && b.type == Type::Undefined) return 0;
    if (numeric(a) && numeric(b)) return num(a) < num(b) ? -1 : num(a) > num(b) ? 1 : 0;
    if (a.type == Type::String && b.type == Type::String) {
      const std::string x = case_sensitive ? a.str : ascii_lower(a.str), y = case_sensitive ? b.str : ascii_lower(b.str);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    fail(line, std::string("cannot compare a ") + type_name(a.type) + " with a " + type_name(b.type) + " when sorting");
  }

  static Value attribute_path(const Value& item, const std::string& path) {  // "a.b.0"
    Value v = item;
    size_t start = 0;
    while (true) {
      const size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (v.type == Type::Object || v.type == Type::Namespace) {
        const Value* next = v.object->find(part);
        if (!next) return Value::undefined();
        v = *next;
      } else if (v.type == Type::Array) {
        if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos || part.size() > 9) return Value::undefined();
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

  Value array_filter(const Node& n, const Value& operand, const Args& args) {
    const std::string& name = n.str;
    const int line = n.line;
    const auto& items = *operand.array;
    if (name == "list") return operand;
    if (name == "first") return items.empty() ? Value::undefined() : items.front();
    if (name == "last") return items.empty() ? Value::undefined() : items.back();
    if (name == "length" || name == "count") return Value::of_int(static_cast<int64_t>(items.size()));
    if (name == "reverse") return Value::list(std::vector<Value>(items.rbegin(), items.rend()));
    if (name == "string") return Value::of(json(operand, JsonOptions{}, false, line));
    if (name == "join") {
      const Value* sep = n.flag ? (args.positional.empty() ? args.keyword("d") : &args.positional[0]) : nullptr;
      if (sep && sep->type != Type::String) fail(line, "join separator must be a string");
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (i && sep) out += sep->str;
        const Value& e = items[i];
        if (e.type == Type::String || e.is_number() || e.type == Type::Bool) out += concat_text(e, line);
        else if (e.type != Type::Null && e.type != Type::Undefined) fail(line, std::string("join: cannot join a ") + type_name(e.type));
        check_size(out.size(), line);
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
      if (attribute && attribute->type == Type::String) path = attribute->str;
      else if (attribute && attribute->type == Type::Int) path = std::to_string(attribute->integer);
      else if (attribute && attribute->type != Type::Null) fail(line, "sort attribute must be a string or an integer");
      std::vector<Value> out = items;
      const bool rev = reverse && truthy(*reverse), cs = case_sensitive && truthy(*case_sensitive);
      std::stable_sort(out.begin(), out.end(), [&](const Value& a, const Value& b) {
        const int c = compare(path.empty() ? a : attribute_path(a, path), path.empty() ? b : attribute_path(b, path), cs, line);
        return rev ? c > 0 : c < 0;
      });
      return Value::list(std::move(out));
    }
    if (name == "selectattr" || name == "rejectattr") {
      const bool select = name == "selectattr";
      for (size_t i = 1; i < n.kids.size(); ++i)
        if (n.kids[i]->kind != NodeKind::StringLit) fail(line, name + " arguments must be string literals");
      if (args.positional.empty()) fail(line, name + " needs an attribute name");
      for (const auto& e : items)
        if (e.type != Type::Object && e.type != Type::Namespace) fail(line, name + " applies to a list of mappings");
      std::vector<Value> out;
      for (const auto& e : items) {
        const Value* a = e.object->find(args.positional[0].str);
        bool result = false;
        if (a) {
          if (args.positional.size() < 2) result = truthy(*a);
          else if (args.positional[1].str == "equalto" || args.positional[1].str == "eq" || args.positional[1].str == "==")
            result = args.positional.size() > 2 && strict_equal(*a, args.positional[2]);
          else result = apply_test(args.positional[1].str, *a, line);
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
        if (e.type != Type::Object && e.type != Type::Namespace) fail(line, "map(attribute=) applies to a list of mappings");
        Value v = attribute_path(e, attribute->str);
        out.push_back(v.type == Type::Undefined && fallback ? *fallback : v);
      }
      return Value::list(std::move(out));
    }
    fail(line, "filter '" + name + "' is not supported on a list");
  }

  static const Value* arg_or(const Args& args, size_t i, const char* keyword) {
    return i < args.positional.size() ? &args.positional[i] : args.keyword(keyword);
  }

  const Limits& limits_;
  int depth_ = 0;
  uint64_t steps_ = 0;
};

}  // namespace

Template::Template(std::string_view source) : program_(std::make_unique<Program>()) {
  program_->body = parse_template(source, Limits{}.max_depth);
}

Template::~Template() = default;

std::string Template::render(const nlohmann::ordered_json& context, const Limits& limits) const {
  return Renderer(limits).run(program_->body, context);
}

}  // namespace distil::text::jinja
