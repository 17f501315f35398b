// Runs every row of Math-Verify's own test cases (tests/graders/conformance/math) through our math
// answer comparison and requires at least 95% agreement on the rows that are not quirks.
#include <fstream>
#include <iostream>
#include <regex>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "graders/math_answer.h"

using namespace distil::graders;

namespace {

// The cases live in the repository (copied from the shared conformance folder, provenance in
// the README beside them), so every clone runs them.
std::string conformance_path() { return std::string(DISTIL_SOURCE_DIR) + "/tests/graders/conformance/math/mathverify_cases.jsonl"; }

// Rows of the "sympy_expr_eq" harness hold sympy constructors; write them as LaTeX.
std::string sympy_to_latex(std::string s) {
  s = std::regex_replace(s, std::regex(R"(Rational\((-?\d+),\s*(-?\d+)\))"), "\\frac{$1}{$2}");
  s = std::regex_replace(s, std::regex(R"(Float\(([-0-9.eE]+)\))"), "$1");
  s = std::regex_replace(s, std::regex(R"(Integer\((-?\d+)\))"), "$1");
  return s;
}

}  // namespace

bool grade_row(const nlohmann::json& row) {
  const auto& options = row.at("options");
  const std::string harness = options.at("harness").get<std::string>();
  math::CompareOptions compare;
  compare.float_places = options.value("precision", 6);
  compare.strict = options.value("strict", true);
  compare.allow_set_relation = options.value("allow_set_relation_comp", false);
  const std::string gold = row.at("gold").get<std::string>(), pred = row.at("pred").get<std::string>();
  if (harness.rfind("sympy_expr_eq", 0) == 0) {
    compare.float_places = options.value("float_rounding", 6);
    return math::equivalent({math::parse_reference(sympy_to_latex(gold))}, {math::parse_reference(sympy_to_latex(pred))}, compare);
  }
  math::ExtractTargets targets;
  if (options.contains("match_types") && options["match_types"].is_array()) {
    targets.latex = targets.expr = false;
    for (const auto& t : options["match_types"]) {
      targets.latex |= t == "latex";
      targets.expr |= t == "expr";
    }
  }
  auto gold_answers = math::extract_answers(gold, targets);
  auto pred_answers = math::extract_answers(pred, targets);
  if (gold_answers.empty() || pred_answers.empty()) return false;
  return math::equivalent(gold_answers, pred_answers, compare);
}

TEST(MathConformance, AgreesWithMathVerifyOnAtLeast95Percent) {
  std::ifstream in(conformance_path());
  ASSERT_TRUE(in) << "conformance file not found at " << conformance_path();
  std::string line;
  int rows = 0, agree = 0, quirk_rows = 0, quirk_agree = 0, line_no = 0;
  std::vector<std::string> misses;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    const auto row = nlohmann::json::parse(line);
    const bool expected = row.at("expected").get<bool>();
    const bool got = grade_row(row);
    const bool quirk = row.value("quirk", false);
    if (quirk) {
      ++quirk_rows;
      quirk_agree += got == expected;
      continue;
    }
    ++rows;
    if (got == expected) {
      ++agree;
    } else {
      std::string gold = row["gold"].get<std::string>(), pred = row["pred"].get<std::string>();
      misses.push_back("line " + std::to_string(line_no) + " (" + row.value("test", "") + "): expected " +
                       (expected ? "true" : "false") + "; gold=" + gold.substr(0, 120) + " | pred=" +
                       (pred.size() > 160 ? "..." + pred.substr(pred.size() - 160) : pred));
    }
  }
  const double agreement = rows ? 100.0 * agree / rows : 0.0;
  std::cout << "math conformance: " << agree << "/" << rows << " rows agree (" << agreement << "%); quirk rows: " << quirk_agree
            << "/" << quirk_rows << " agree (excluded)\n";
  for (const auto& m : misses) std::cout << "  miss: " << m << "\n";
  ASSERT_EQ(rows + quirk_rows, 274) << "the conformance file should hold 274 rows";
  EXPECT_GE(agreement, 95.0);
}
