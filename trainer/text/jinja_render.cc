// Jinja chat templates, back end: evaluating the syntax tree with the semantics of
// @huggingface/jinja's Interpreter (src/runtime.ts): statements, scoping (a for loop has its own
// scope, `if` does not), macros, member access and slicing, and the operators. The builtins
// (filters, tests, methods, globals) are in trainer/text/jinja_builtins.cc.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <unordered_map>

#include "trainer/text/jinja_builtins.h"

namespace distil::text::jinja {

RaisedException::RaisedException(const std::string& message, int line)
    : Error("chat template line " + std::to_string(line) + ": raise_exception: " + message),
      message_(message) {}

namespace {

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

class Renderer {
 public:
  explicit Renderer(const Limits& limits) : limits_(limits), budget_(limits) {}

  std::string run(const std::vector<NodePtr>& body, const nlohmann::ordered_json& context) {
    auto globals = std::make_shared<Scope>();
    for (auto& [name, value] : global_variables(budget_)) globals->vars[name] = std::move(value);
    if (!context.is_object() && !context.is_null())
      throw Error("chat template context must be a JSON object");
    if (context.is_object())
      for (const auto& [key, value] : context.items())
        globals->vars[key] = from_json(value, limits_.max_depth);
    // Assigning into a namespace is the only mutation a template can make, so the only way to
    // build a reference cycle (`{% set ns.me = ns %}`), which shared ownership would leak: empty
    // those namespaces when the render ends (nothing of a render outlives it but its text).
    struct BreakCycles {
      std::vector<std::shared_ptr<ObjectData>>& namespaces;
      ~BreakCycles() {
        for (auto& ns : namespaces) ns->entries.clear();
      }
    } break_cycles{assigned_namespaces_};
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
        fail(line, "rendering nests deeper than " + std::to_string(r.limits_.max_depth) +
                       " levels (runaway recursion?)");
    }
    ~DepthGuard() { --r.depth_; }
  };

  void step(int line) { budget_.step(line); }
  void check_size(size_t bytes, int line) const { budget_.check_size(bytes, line); }

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
      case NodeKind::Text:
        out += n.str;
        return;
      case NodeKind::Output: {
        const Value v = eval(*n.kids[0], scope);
        if (v.type != Type::Null && v.type != Type::Undefined) out += display(v, n.line, budget_);
        return;
      }
      case NodeKind::If:
        out += render_block(truthy(eval(*n.kids[0], scope)) ? n.body : n.alt, scope);
        return;
      case NodeKind::For:
        out += render_for(n, scope);
        return;
      case NodeKind::Set:
        execute_set(n, scope);
        return;
      case NodeKind::Macro:
        define_macro(n, scope);
        return;
      case NodeKind::Filter:
        if (!n.kids[0]) {  // {% filter %} block
          const Value body = Value::of(render_block(n.body, scope));
          const Value v = apply_filter(n, body, eval_args(n.kids, 1, scope), budget_);
          if (v.type != Type::Null && v.type != Type::Undefined) out += display(v, n.line, budget_);
          return;
        }
        break;
      case NodeKind::Break:
        throw BreakSignal{n.line};
      case NodeKind::Continue:
        throw ContinueSignal{n.line};
      default:
        break;
    }
    const Value v = eval(n, scope);
    if (v.type != Type::Null && v.type != Type::Undefined) out += display(v, n.line, budget_);
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
      fail(n.line, std::string("{% for %} needs a list or a mapping to iterate, got ") +
                       type_name(iterable.type));
    }
    std::vector<Value> items;
    for (const Value& item : candidates) {
      step(n.line);
      if (var.kind == NodeKind::TupleLit) {
        if (item.type != Type::Array)
          fail(n.line,
               std::string("cannot unpack a ") + type_name(item.type) + " into the loop variables");
        if (item.array->size() != var.kids.size())
          fail(n.line, std::string("too ") +
                           (var.kids.size() > item.array->size() ? "few" : "many") +
                           " items to unpack");
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
        out +=
            render_block(n.body, scope);  // an iteration cut short by break/continue adds nothing
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
      if (rhs.type != Type::Array)
        fail(n.line, std::string("cannot unpack a ") + type_name(rhs.type) + " in {% set %}");
      if (rhs.array->size() != target.kids.size())
        fail(n.line, std::string("too ") +
                         (target.kids.size() > rhs.array->size() ? "few" : "many") +
                         " items to unpack in {% set %}");
      for (size_t i = 0; i < target.kids.size(); ++i) {
        if (target.kids[i]->kind != NodeKind::Ident)
          fail(n.line, "{% set %} can unpack only into names");
        scope->vars[target.kids[i]->str] = (*rhs.array)[i];
      }
    } else {  // Member
      const Value object = eval(*target.kids[0], scope);
      if (object.type != Type::Namespace)
        fail(n.line, std::string("{% set x.attr = ... %} needs x to be a namespace(), got ") +
                         type_name(object.type));
      if (target.flag || target.kids[1]->kind != NodeKind::Ident)
        fail(n.line, "{% set %} on a namespace takes a plain attribute name (ns.name)");
      object.object->set(target.kids[1]->str, std::move(rhs));
      assigned_namespaces_.push_back(object.object);
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
        fail(line,
             "macro '" + node->str + "' takes no keyword argument '" + unused_keywords[0] + "'");
      if (args.positional.size() > node->kids.size())
        fail(line, "macro '" + node->str + "' takes at most " + std::to_string(node->kids.size()) +
                       " argument(s)");
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
      case NodeKind::StringLit:
        return Value::of(n.str);
      case NodeKind::IntLit:
        return Value::of_int(n.integer);
      case NodeKind::FloatLit:
        return Value::of_float(n.real);
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
          if (key.type != Type::String)
            fail(n.line,
                 std::string("dict literal keys must be strings, got ") + type_name(key.type));
          obj.object->set(key.str, eval(*n.kids[i + 1], scope));
        }
        return obj;
      }
      case NodeKind::Member:
        return eval_member(n, scope);
      case NodeKind::Call:
        return eval_call(n, scope);
      case NodeKind::Filter: {
        const Value operand = eval(*n.kids[0], scope);
        return apply_filter(n, operand, eval_args(n.kids, 1, scope), budget_);
      }
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
      case NodeKind::Binary:
        return eval_binary(n, scope);
      case NodeKind::Ternary:
        return truthy(eval(*n.kids[0], scope)) ? eval(*n.kids[1], scope) : eval(*n.kids[2], scope);
      case NodeKind::Select:
        return truthy(eval(*n.kids[1], scope)) ? eval(*n.kids[0], scope) : Value::undefined();
      case NodeKind::Slice:
        fail(n.line, "a slice outside a subscript");
      case NodeKind::KwArg:
        fail(n.line, "keyword argument " + n.str + "= outside a call");
      default:
        fail(n.line, "a statement where an expression is expected");
    }
  }

  Value eval_member(const Node& n, const ScopePtr& scope) {
    const Value object = eval(*n.kids[0], scope);
    const Node& prop_node = *n.kids[1];
    if (n.flag && prop_node.kind == NodeKind::Slice) return eval_slice(object, prop_node, scope);
    Value prop;
    if (n.flag)
      prop = eval(prop_node, scope);
    else if (prop_node.kind == NodeKind::IntLit)
      prop = Value::of_int(prop_node.integer);
    else
      prop = Value::of(prop_node.str);
    const auto need_string = [&] {
      if (prop.type != Type::String)
        fail(n.line, std::string("a ") + type_name(object.type) +
                         " is indexed by a string, not a " + type_name(prop.type));
    };
    if (object.type == Type::Object || object.type == Type::Namespace) {
      need_string();
      if (const Value* v = object.object->find(prop.str)) return *v;
      if (object.type == Type::Object) return dict_attribute(object, prop.str);
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
        fail(n.line, std::string("a ") + type_name(object.type) +
                         " is indexed by an integer or a name, not a " + type_name(prop.type));
      if (object.type == Type::Array)
        return prop.str == "length" ? Value::of_int(static_cast<int64_t>(object.array->size()))
                                    : Value::undefined();
      return string_attribute(object, prop.str, budget_);
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
      if (v.type != Type::Int)
        fail(slice.line, std::string("slice bounds must be integers, got ") + type_name(v.type));
      bounds[i] = v.integer;
    }
    const int64_t step = bounds[2].value_or(1);
    if (object.type == Type::Array) {
      std::vector<Value> out;
      for (int64_t i :
           slice_indices(static_cast<int64_t>(object.array->size()), bounds[0], bounds[1], step))
        out.push_back((*object.array)[static_cast<size_t>(i)]);
      return Value::list(std::move(out));
    }
    if (object.type == Type::String) {
      const auto chars = code_points(object.str);
      std::string out;
      for (int64_t i :
           slice_indices(static_cast<int64_t>(chars.size()), bounds[0], bounds[1], step))
        out += chars[static_cast<size_t>(i)];
      return Value::of(std::move(out));
    }
    fail(slice.line,
         std::string("only lists and strings can be sliced, got ") + type_name(object.type));
  }

  Args eval_args(const std::vector<NodePtr>& kids, size_t first, const ScopePtr& scope) {
    Args args;
    for (size_t i = first; i < kids.size(); ++i)
      if (kids[i]->kind != NodeKind::KwArg) args.positional.push_back(eval(*kids[i], scope));
    for (size_t i = first; i < kids.size(); ++i) {
      if (kids[i]->kind != NodeKind::KwArg) continue;
      if (args.keyword(kids[i]->str))
        fail(kids[i]->line, "keyword argument '" + kids[i]->str + "' given twice");
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
      fail(n.line,
           "cannot call " + describe_callee(*n.kids[0]) + ": it is " +
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
      fail(n.line, "operator '" + op + "' is not supported between a " + type_name(left.type) +
                       " and a " + type_name(right.type));
    };
    if (left.is_number() && right.is_number() && op != "~" && op != "**") {
      const bool is_float = left.type == Type::Float || right.type == Type::Float;
      const double a = left.number(), b = right.number();
      if (op == "+" || op == "-" || op == "*") {
        if (!is_float) {
          int64_t r;
          const bool overflow = op == "+" ? __builtin_add_overflow(left.integer, right.integer, &r)
                                : op == "-"
                                    ? __builtin_sub_overflow(left.integer, right.integer, &r)
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
          if (left.integer == INT64_MIN && right.integer == -1)
            fail(n.line, "integer overflow in '" + op + "'");
          if (op == "%")
            return Value::of_int(left.integer %
                                 right.integer);  // the sign of the dividend, as in JavaScript
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
      if (right.type == Type::Undefined && (op == "in" || op == "not in"))
        return Value::of(op == "not in");
      if (op == "~" && left.type != Type::Null && right.type != Type::Null) {
        const std::string l = left.type == Type::Undefined ? "" : concat_text(left, n.line);
        const std::string r = right.type == Type::Undefined ? "" : concat_text(right, n.line);
        return Value::of(l + r);
      }
      fail(n.line, "operator '" + op + "' on an undefined value (a missing variable or field?)");
    }
    if (left.type == Type::Null || right.type == Type::Null)
      fail(n.line, "operator '" + op + "' on none");
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

  const Limits& limits_;
  Budget budget_;
  int depth_ = 0;
  std::vector<std::shared_ptr<ObjectData>> assigned_namespaces_;
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
