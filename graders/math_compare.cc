// The equivalence rules between parsed math answers (math_parse.cc): numbers exactly or after
// rounding, expressions symbolically and at random points, tuples, sets, intervals, matrices,
// equations and inequalities. Every input is hostile: any GiNaC exception means "not equal",
// never a crash.
#include "graders/math_parse.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <complex>
#include <random>
#include <sstream>

namespace distil::graders::math {

// ---------------------------------------------------------------------------------------------
// Equivalence.

namespace {

struct Comparer {
  const CompareOptions& options;
  int budget = 20000;  // comparison steps: a hostile set of sets cannot explode combinatorially

  bool spend(int cost = 1) {
    budget -= cost;
    return budget > 0;
  }

  static bool is_matrix(const GiNaC::ex& e) { return GiNaC::is_a<GiNaC::matrix>(e); }

  static bool finite(std::complex<double> z) { return std::isfinite(z.real()) && std::isfinite(z.imag()); }

  static std::optional<std::complex<double>> to_complex(const GiNaC::ex& e) {
    try {
      GiNaC::ex v = GiNaC::evalf(e);
      if (!GiNaC::is_a<GiNaC::numeric>(v)) return std::nullopt;
      const auto& n = GiNaC::ex_to<GiNaC::numeric>(v);
      return std::complex<double>(GiNaC::real(n).to_double(), GiNaC::imag(n).to_double());
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  static GiNaC::lst free_symbols(const GiNaC::ex& e) {
    GiNaC::exset found;
    for (GiNaC::const_preorder_iterator it = e.preorder_begin(); it != e.preorder_end(); ++it) {
      if (GiNaC::is_a<GiNaC::symbol>(*it)) found.insert(*it);
    }
    GiNaC::lst out;
    for (const auto& s : found) out.append(s);
    return out;
  }

  double round_to(double x, int places) const {
    const double scale = std::pow(10.0, places);
    return std::floor(x * scale + 0.5) / scale;
  }

  bool numbers_equal_rounded(std::complex<double> a, std::complex<double> b) const {
    auto close = [&](double x, double y) {
      const double rx = round_to(x, options.float_places), ry = round_to(y, options.float_places);
      return std::abs(rx - ry) <= 1e-9 * std::max(1.0, std::abs(rx));
    };
    return close(a.real(), b.real()) && close(a.imag(), b.imag());
  }

  // Scalars: exact when possible, rounded when a decimal is involved, random points for symbols.
  bool scalars_equal(const Value& g, const Value& p) {
    if (!spend(10)) return false;
    try {
      GiNaC::ex a = g.ex, b = p.ex;
      if (is_matrix(a) || is_matrix(b)) {
        a = a.evalm();
        b = b.evalm();
        if (!is_matrix(a) || !is_matrix(b)) return false;
        const auto& ma = GiNaC::ex_to<GiNaC::matrix>(a);
        const auto& mb = GiNaC::ex_to<GiNaC::matrix>(b);
        if (ma.rows() != mb.rows() || ma.cols() != mb.cols()) return false;
        for (unsigned r = 0; r < ma.rows(); ++r) {
          for (unsigned c = 0; c < ma.cols(); ++c) {
            if (!scalars_equal(scalar(ma(r, c), g.has_float, false), scalar(mb(r, c), p.has_float, false))) return false;
          }
        }
        return true;
      }
      if ((a - b).is_zero()) return true;
      // A letter i against the imaginary unit (\sqrt{-1} evaluates to I): read the letter as the
      // unit, but only when the other side holds the unit, so that i stays a plain symbol (an
      // index, a variable) everywhere else.
      {
        const GiNaC::ex& letter_i = symbol_named("i");
        const bool a_unit = a.has(GiNaC::I), b_unit = b.has(GiNaC::I);
        if ((a_unit && !b_unit && b.has(letter_i)) || (b_unit && !a_unit && a.has(letter_i))) {
          GiNaC::ex a_i = a.subs(letter_i == GiNaC::I), b_i = b.subs(letter_i == GiNaC::I);
          if (GiNaC::expand(a_i - b_i).is_zero()) return true;
          a = a_i;
          b = b_i;
        }
      }
      GiNaC::lst symbols = free_symbols(a - b);
      if (symbols.nops() == 0) {
        auto x = to_complex(a), y = to_complex(b);
        if (!x || !y || !finite(*x) || !finite(*y)) return false;  // overflowed: only exact equality counts
        if (g.has_float || p.has_float) return numbers_equal_rounded(*x, *y);
        return std::abs(*x - *y) <= 1e-10 * std::max(1.0, std::abs(*x));
      }
      if (symbols.nops() > 0) {
        for (const auto& s : symbols) {
          if (s.is_equal(infinity_symbol())) return false;  // oo is only ever equal to itself
        }
      }
      // Random points, deterministic per comparison: equal at all three is equal.
      std::mt19937 rng(12345);
      std::uniform_real_distribution<double> dist(0.6, 2.4);
      for (int trial = 0; trial < 3; ++trial) {
        GiNaC::exmap at;
        for (const auto& s : symbols) at[s] = GiNaC::numeric(dist(rng));
        auto x = to_complex(a.subs(at)), y = to_complex(b.subs(at));
        if (!x || !y || !finite(*x) || !finite(*y)) {
          // Not evaluable (pole): fall back to exact simplification.
          return GiNaC::normal(GiNaC::expand(a - b)).is_zero();
        }
        const double tolerance = (g.has_float || p.has_float) ? std::pow(10.0, -options.float_places) : 1e-9;
        if (std::abs(*x - *y) > tolerance * std::max(1.0, std::abs(*x))) return false;
      }
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  static bool is_assignment(const Value& v) {
    if (v.kind != Value::Kind::relation) return false;
    for (Rel r : v.ops) {
      if (r != Rel::eq) return false;
    }
    const Value& lhs = v.items.front();
    if (lhs.kind == Value::Kind::tuple) {
      for (const auto& item : lhs.items) {
        if (!item.only_symbols) return false;
      }
      return true;
    }
    return lhs.only_symbols && (lhs.kind == Value::Kind::scalar || lhs.kind == Value::Kind::text);
  }
  static bool is_equation(const Value& v) {
    if (v.kind != Value::Kind::relation) return false;
    for (Rel r : v.ops) {
      if (r != Rel::eq) return false;
    }
    return true;
  }

  static Rel flip(Rel r) {
    switch (r) {
      case Rel::lt: return Rel::gt;
      case Rel::gt: return Rel::lt;
      case Rel::le: return Rel::ge;
      case Rel::ge: return Rel::le;
      default: return r;
    }
  }

  // a op b  vs  c op' d: the same relation up to a constant factor (negative flips inequalities).
  bool single_relations_equal(const Value& gl, Rel gop, const Value& gr, const Value& pl, Rel pop, const Value& pr) {
    if (gl.kind != Value::Kind::scalar || gr.kind != Value::Kind::scalar || pl.kind != Value::Kind::scalar ||
        pr.kind != Value::Kind::scalar) {
      if (gop == pop) return equal(gl, pl) && equal(gr, pr);
      if (gop == flip(pop)) return equal(gl, pr) && equal(gr, pl);
      return false;
    }
    try {
      GiNaC::ex dg = gl.ex - gr.ex, dp = pl.ex - pr.ex;
      if (dg.is_zero() || dp.is_zero()) return dg.is_zero() && dp.is_zero() && gop == pop;
      if ((dg - dp).is_zero()) return gop == pop;  // the same relation, even where it cannot be evaluated
      if ((dg + dp).is_zero()) return gop == flip(pop);
      GiNaC::lst symbols = free_symbols(GiNaC::lst{dg, dp});
      std::mt19937 rng(777);
      std::uniform_real_distribution<double> dist(0.6, 2.4);
      std::optional<double> ratio;
      for (int trial = 0; trial < 3; ++trial) {
        GiNaC::exmap at;
        for (const auto& s : symbols) at[s] = GiNaC::numeric(dist(rng));
        auto x = to_complex(dg.subs(at)), y = to_complex(dp.subs(at));
        if (!x || !y || std::abs(*y) < 1e-12 || std::abs(x->imag()) > 1e-12 || std::abs(y->imag()) > 1e-12) return false;
        double r = x->real() / y->real();
        if (ratio && std::abs(r - *ratio) > 1e-9 * std::max(1.0, std::abs(r))) return false;
        ratio = r;
      }
      if (!ratio || *ratio == 0) return false;
      if (gop == Rel::eq || gop == Rel::ne) return gop == pop;
      return *ratio > 0 ? gop == pop : gop == flip(pop);
    } catch (const std::exception&) {
      return false;
    }
  }

  bool relations_equal(const Value& g, const Value& p) {
    if (g.items.size() != p.items.size()) return false;
    if (g.items.size() == 2) return single_relations_equal(g.items[0], g.ops[0], g.items[1], p.items[0], p.ops[0], p.items[1]);
    // chains: term by term, either as written or mirrored (a < x < b  ==  b > x > a)
    bool same = true;
    for (std::size_t i = 0; i < g.ops.size() && same; ++i) same = g.ops[i] == p.ops[i];
    for (std::size_t i = 0; i < g.items.size() && same; ++i) same = equal(g.items[i], p.items[i]);
    if (same) return true;
    const std::size_t n = g.items.size();
    bool mirrored = true;
    for (std::size_t i = 0; i < g.ops.size() && mirrored; ++i) mirrored = g.ops[i] == flip(p.ops[g.ops.size() - 1 - i]);
    for (std::size_t i = 0; i < n && mirrored; ++i) mirrored = equal(g.items[i], p.items[n - 1 - i]);
    return mirrored;
  }

  // "a <= x < b" and "x > a" as intervals, for comparison with interval answers.
  static std::optional<Value> relation_as_interval(const Value& r) {
    auto bound = [](const Value& v) { return v.kind == Value::Kind::scalar && !v.only_symbols; };
    auto make = [](GiNaC::ex lo, bool lo_open, GiNaC::ex hi, bool hi_open) {
      Value i;
      i.kind = Value::Kind::interval;
      i.items = {scalar(lo, false, false), scalar(hi, false, false)};
      i.left_open = lo_open;
      i.right_open = hi_open;
      return i;
    };
    const GiNaC::ex inf = infinity_symbol();
    // a <= |x| <= b  is  [-b, -a] U [a, b]
    if (r.items.size() == 3 && r.items[1].only_symbols && bound(r.items[0]) && bound(r.items[2]) &&
        GiNaC::is_a<GiNaC::function>(r.items[1].ex) && GiNaC::ex_to<GiNaC::function>(r.items[1].ex).get_name() == "abs" &&
        (r.ops[0] == Rel::lt || r.ops[0] == Rel::le) && (r.ops[1] == Rel::lt || r.ops[1] == Rel::le)) {
      const bool lo_open = r.ops[0] == Rel::lt, hi_open = r.ops[1] == Rel::lt;
      Value u;
      u.kind = Value::Kind::union_of;
      u.items = {make(-r.items[2].ex, hi_open, -r.items[0].ex, lo_open), make(r.items[0].ex, lo_open, r.items[2].ex, hi_open)};
      return u;
    }
    if (r.items.size() == 3 && r.items[1].only_symbols && bound(r.items[0]) && bound(r.items[2])) {
      Rel a = r.ops[0], b = r.ops[1];
      if ((a == Rel::lt || a == Rel::le) && (b == Rel::lt || b == Rel::le))
        return make(r.items[0].ex, a == Rel::lt, r.items[2].ex, b == Rel::lt);
      if ((a == Rel::gt || a == Rel::ge) && (b == Rel::gt || b == Rel::ge))
        return make(r.items[2].ex, b == Rel::gt, r.items[0].ex, a == Rel::gt);
    }
    if (r.items.size() == 2) {
      Rel op = r.ops[0];
      const Value* value = nullptr;
      if (r.items[0].only_symbols && bound(r.items[1])) {
        value = &r.items[1];
      } else if (r.items[1].only_symbols && bound(r.items[0])) {
        value = &r.items[0];
        op = flip(op);
      }
      if (value) {
        if (op == Rel::lt || op == Rel::le) return make(-inf, true, value->ex, op == Rel::lt);
        if (op == Rel::gt || op == Rel::ge) return make(value->ex, op == Rel::gt, inf, true);
      }
    }
    return std::nullopt;
  }

  static bool set_like(const Value& v) {
    return v.kind == Value::Kind::set || v.kind == Value::Kind::tuple || v.kind == Value::Kind::interval ||
           v.kind == Value::Kind::union_of;
  }

  bool sequences_equal(const std::vector<Value>& a, const std::vector<Value>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!equal(a[i], b[i])) return false;
    }
    return true;
  }

  // Every element of `a` matched to a distinct element of `b` (sets are unordered).
  bool multisets_equal(const std::vector<Value>& a, const std::vector<Value>& b) {
    if (a.size() != b.size()) return false;
    std::vector<bool> used(b.size(), false);
    for (const auto& x : a) {
      bool found = false;
      for (std::size_t j = 0; j < b.size(); ++j) {
        if (used[j]) continue;
        if (!spend()) return false;
        if (equal(x, b[j])) {
          used[j] = true;
          found = true;
          break;
        }
      }
      if (!found) return false;
    }
    return true;
  }

  // Sets ignore order and repetition: every element of each side is in the other.
  bool contained(const std::vector<Value>& a, const std::vector<Value>& b) {
    for (const auto& x : a) {
      bool found = false;
      for (const auto& y : b) {
        if (!spend()) return false;
        if (equal(x, y)) {
          found = true;
          break;
        }
      }
      if (!found) return false;
    }
    return true;
  }
  bool same_elements(const std::vector<Value>& a, const std::vector<Value>& b) { return contained(a, b) && contained(b, a); }

  bool sets_equal(const Value& g, const Value& p) {
    using K = Value::Kind;
    if (g.kind == K::interval && p.kind == K::interval) {
      return g.left_open == p.left_open && g.right_open == p.right_open && equal(g.items[0], p.items[0]) &&
             equal(g.items[1], p.items[1]);
    }
    // "(a, b)" may be an open interval
    if (g.kind == K::interval && p.kind == K::tuple && p.paren_pair) return g.left_open && g.right_open && sequences_equal(g.items, p.items);
    if (p.kind == K::interval && g.kind == K::tuple && g.paren_pair) return p.left_open && p.right_open && sequences_equal(g.items, p.items);
    if (g.kind == K::tuple && p.kind == K::tuple) return sequences_equal(g.items, p.items);
    if (g.kind == K::set && p.kind == K::set) return same_elements(g.items, p.items);
    if (g.kind == K::union_of && p.kind == K::union_of) return multisets_equal(g.items, p.items);
    // a tuple against a written-out set keeps the order it was written in
    if ((g.kind == K::tuple && p.kind == K::set) || (g.kind == K::set && p.kind == K::tuple)) {
      if (sequences_equal(g.items, p.items)) return true;
      return !options.strict && multisets_equal(g.items, p.items);
    }
    // a single value against a one-element set
    if (g.kind == K::set && g.items.size() == 1 && !set_like(p)) return equal(g.items[0], p);
    if (p.kind == K::set && p.items.size() == 1 && !set_like(g)) return equal(g, p.items[0]);
    return false;
  }

  bool texts_equal(const Value& g, const Value& p) {
    auto as_text = [](const Value& v) -> std::optional<std::string> {
      if (v.kind == Value::Kind::text) return v.text;
      if (v.kind == Value::Kind::scalar && v.only_symbols) {
        // "Evelyn" parsed as E*v*e*l*y*n: compare the letters
        std::ostringstream out;
        out << v.ex;
        std::string s;
        for (char c : out.str()) {
          if (std::isalpha(static_cast<unsigned char>(c))) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        std::sort(s.begin(), s.end());
        return s;
      }
      return std::nullopt;
    };
    auto a = as_text(g), b = as_text(p);
    if (!a || !b) return false;
    if (g.kind == Value::Kind::text && p.kind == Value::Kind::text) return *a == *b;
    std::string x = *a, y = *b;
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    return x == y;
  }

  bool equal(const Value& gold, const Value& pred) {
    using K = Value::Kind;
    if (!spend()) return false;
    Value g = gold, p = pred;
    const bool ga = is_assignment(g), pa = is_assignment(p);
    if (ga && !pa && p.kind != K::relation) g = Value(g.items.back());
    if (pa && !ga && g.kind != K::relation) p = Value(p.items.back());
    if (ga && pa) {
      g.items = {g.items.front(), g.items.back()};
      g.ops = {Rel::eq};
      p.items = {p.items.front(), p.items.back()};
      p.ops = {Rel::eq};
    } else if (is_equation(p) && !is_equation(g) && !pa) {
      p = Value(p.items.back());
    }
    if (g.kind == K::relation && set_like(p)) {
      if (auto interval = relation_as_interval(g)) g = *interval;
    }
    if (options.allow_set_relation && p.kind == K::relation && set_like(g)) {
      if (auto interval = relation_as_interval(p)) p = *interval;
    }
    if (g.kind == K::text || p.kind == K::text) return texts_equal(g, p);
    if (g.kind == K::relation && p.kind == K::relation) return relations_equal(g, p);
    if (g.kind == K::relation || p.kind == K::relation) return false;
    if (set_like(g) || set_like(p)) return sets_equal(g, p);
    // scalars
    if (scalars_equal(g, p)) return true;
    if (g.percent != p.percent) {
      // "28%" against "28": the percent sign is often dropped or added
      Value a = g, b = p;
      if (a.percent) a.ex = a.before_percent;
      if (b.percent) b.ex = b.before_percent;
      if (scalars_equal(a, b)) return true;
    }
    if (g.only_symbols && p.only_symbols) return texts_equal(g, p);
    return false;
  }
};

// Renames the predicted answer's symbols to the gold's, by sorted name (non-strict mode).
void collect_symbols(const Value& v, GiNaC::exset& out) {
  if (v.kind == Value::Kind::scalar) {
    for (GiNaC::const_preorder_iterator it = v.ex.preorder_begin(); it != v.ex.preorder_end(); ++it) {
      if (GiNaC::is_a<GiNaC::symbol>(*it)) out.insert(*it);
    }
  }
  for (const auto& item : v.items) collect_symbols(item, out);
}
void substitute(Value& v, const GiNaC::exmap& map) {
  if (v.kind == Value::Kind::scalar) v.ex = v.ex.subs(map);
  for (auto& item : v.items) substitute(item, map);
}

}  // namespace

bool values_equal(const Value& gold, const Value& predicted, const CompareOptions& options) {
  std::lock_guard lock(ginac_mutex());
  try {
    Comparer comparer{options};
    if (comparer.equal(gold, predicted)) return true;
    if (!options.strict) {
      GiNaC::exset gs, ps;
      collect_symbols(gold, gs);
      collect_symbols(predicted, ps);
      if (gs.size() == ps.size() && !gs.empty()) {
        GiNaC::exmap map;
        auto gi = gs.begin();
        for (auto pi = ps.begin(); pi != ps.end(); ++pi, ++gi) map[*pi] = *gi;
        Value renamed = predicted;
        substitute(renamed, map);
        Comparer again{options};
        return again.equal(gold, renamed);
      }
    }
    return false;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace distil::graders::math
