// The estimator test of DESIGN.md: on a tabular autoregressive policy (vocabulary 3, horizon 3,
// one logits row per prefix) the mean gradient of the `distil` surrogate over sampled rollouts must
// match the exact gradient of E_y[sum_t c_t(y)], computed by enumerating all 27 sequences with
// autograd; the `ce` surrogate (lambda = 0) must miss it. Plus the paper's one-step example where
// a reverse-KL / JSD update raises the probability of the worst action and forward CE does not.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>
#include <vector>

#include "trainer/objectives.h"

namespace distil::trainer {
namespace {

constexpr int64_t kVocab = 3;
constexpr int64_t kHorizon = 3;
constexpr int64_t kPrefixes = 1 + 3 + 9;  // prefixes of length 0, 1, 2

// Row of the logits table for the prefix tokens[0..t).
int64_t prefix_index(const std::vector<int64_t>& tokens, int64_t t) {
  int64_t offset = 0, width = 1, value = 0;
  for (int64_t i = 0; i < t; ++i) {
    offset += width;
    width *= kVocab;
    value = value * kVocab + tokens[i];
  }
  return offset + value;
}

struct Teacher {
  torch::Tensor ids;   // [kPrefixes, K] teacher's top-k ids per prefix
  torch::Tensor logp;  // [kPrefixes, K]
};

// A fixed teacher whose preferences at depth 2 depend strongly on the first token, so early choices
// carry future disagreement (the part only the future-credit term accounts for).
Teacher make_teacher(int64_t k) {
  torch::manual_seed(1234);
  auto logits = torch::randn({kPrefixes, kVocab}, torch::kDouble) * 2.0;
  auto logp = logits.log_softmax(1);
  auto top = logp.topk(k, 1);
  return {std::get<1>(top), std::get<0>(top)};
}

PositionTargets targets_for(const Teacher& teacher, const torch::Tensor& prefix_rows,
                            const torch::Tensor& sampled) {
  return {sampled, teacher.ids.index_select(0, prefix_rows),
          teacher.logp.index_select(0, prefix_rows)};
}

// Exact gradient of J(theta) = sum_y pi(y) sum_t c_t(y) by enumeration.
torch::Tensor exact_gradient(const torch::Tensor& theta0, const Teacher& teacher,
                             const Objective& objective) {
  auto theta = theta0.clone().requires_grad_(true);
  std::vector<int64_t> rows, tokens;
  for (int64_t code = 0; code < 27; ++code) {
    std::vector<int64_t> y = {code / 9, (code / 3) % 3, code % 3};
    for (int64_t t = 0; t < kHorizon; ++t) {
      rows.push_back(prefix_index(y, t));
      tokens.push_back(y[t]);
    }
  }
  auto row_t = torch::tensor(rows, torch::kLong);
  auto logp = theta.index_select(0, row_t).log_softmax(1);
  auto terms = objective.position_terms(logp, targets_for(teacher, row_t, torch::tensor(tokens)));
  auto log_pi = terms.logq_sampled.view({27, kHorizon}).sum(1);
  auto per_position = terms.local;
  // future_cost kl: the objective is E[sum_t KL_t], c_t less the teacher's entropy at that prefix.
  if (objective.options().future_cost == FutureCost::kl)
    per_position = per_position - teacher_entropy(teacher.logp.index_select(0, row_t), objective.options().tail);
  auto cost = per_position.view({27, kHorizon}).sum(1);
  auto objective_value = (log_pi.exp() * cost).sum();
  objective_value.backward();
  return theta.grad().clone();
}

struct Estimate {
  torch::Tensor mean;
  torch::Tensor standard_error;
};

// Mean and standard error of the surrogate's gradient over independent groups of G rollouts. Each
// group gets its own copy of the table so one backward pass yields every group's gradient.
Estimate sampled_gradient(const torch::Tensor& theta, const Teacher& teacher,
                          const Objective& objective, int64_t groups, int64_t group_size,
                          uint64_t seed) {
  torch::manual_seed(seed);
  const int64_t n = groups * group_size;
  auto tokens = torch::zeros({n, kHorizon}, torch::kLong);
  auto rows = torch::zeros({n, kHorizon}, torch::kLong);
  {
    torch::NoGradGuard no_grad;
    auto offset = torch::zeros({n}, torch::kLong);
    auto value = torch::zeros({n}, torch::kLong);
    int64_t base = 0, width = 1;
    for (int64_t t = 0; t < kHorizon; ++t) {
      auto row = base + value;
      auto probs = theta.index_select(0, row).softmax(1);
      auto y = torch::multinomial(probs, 1).squeeze(1);
      rows.select(1, t).copy_(row);
      tokens.select(1, t).copy_(y);
      base += width;
      width *= kVocab;
      value = value * kVocab + y;
    }
  }
  auto copies = theta.detach().unsqueeze(0).repeat({groups, 1, 1}).requires_grad_(true);
  auto group = torch::arange(groups, torch::kLong).repeat_interleave(group_size);
  auto copy_rows = (group.unsqueeze(1) * kPrefixes + rows).flatten();
  auto logp = copies.view({groups * kPrefixes, kVocab}).index_select(0, copy_rows).log_softmax(1);
  auto terms =
      objective.position_terms(logp, targets_for(teacher, rows.flatten(), tokens.flatten()));
  SequenceBatch batch;
  batch.mask = torch::ones({n, kHorizon}, torch::kDouble);
  batch.group = group;
  batch.reward = torch::zeros({n}, torch::kDouble);
  batch.active = torch::ones({n}, torch::kDouble);
  batch.normalizer = static_cast<double>(group_size);  // each group's gradient: mean over its G
  batch.teacher_entropy =
      teacher_entropy(teacher.logp.index_select(0, rows.flatten()), objective.options().tail).view({n, kHorizon});
  auto out = objective.sequence_loss(terms.logq_sampled.view({n, kHorizon}),
                                     terms.local.view({n, kHorizon}), batch);
  out.loss.backward();
  auto per_group = copies.grad().view({groups, -1});
  return {per_group.mean(0).view({kPrefixes, kVocab}),
          (per_group.std(0) / std::sqrt(static_cast<double>(groups))).view({kPrefixes, kVocab})};
}

torch::Tensor z_scores(const Estimate& estimate, const torch::Tensor& exact) {
  // Coordinates with no spread (there are none in practice) must then agree exactly.
  auto se = estimate.standard_error.clamp_min(1e-12);
  return (estimate.mean - exact) / se;
}

torch::Tensor random_table() {
  torch::manual_seed(99);
  return torch::randn({kPrefixes, kVocab}, torch::kDouble);
}

struct Case {
  int64_t top_k;
  TailMode tail;
  BaselineMode baseline;
  FutureCost future_cost = FutureCost::ce;
};

class DistilEstimator : public ::testing::TestWithParam<Case> {};

TEST_P(DistilEstimator, SurrogateGradientMatchesExactGradientWithinThreeStandardErrors) {
  const Case c = GetParam();
  ObjectiveOptions options;
  options.name = "distil";
  options.tail = c.tail;
  options.baseline = c.baseline;
  options.future_cost = c.future_cost;
  auto objective = make_objective(options);
  auto teacher = make_teacher(c.top_k);
  auto theta = random_table();
  auto exact = exact_gradient(theta, teacher, *objective);
  auto estimate = sampled_gradient(theta, teacher, *objective, 40000, 4, 7);
  auto z = z_scores(estimate, exact);
  const double max_z = z.abs().max().item<double>();
  std::cout << "max |z| over " << z.numel() << " coordinates: " << max_z << "\n";
  EXPECT_LT(max_z, 3.0) << "exact\n" << exact << "\nestimate\n" << estimate.mean << "\nz\n" << z;
  // The comparison is only meaningful if the standard errors are small next to the gradient.
  EXPECT_LT(estimate.standard_error.max().item<double>(), 0.1 * exact.abs().max().item<double>());
}

INSTANTIATE_TEST_SUITE_P(
    TailAndBaseline, DistilEstimator,
    ::testing::Values(Case{1, TailMode::bucket, BaselineMode::group_mean},
                      Case{1, TailMode::bucket, BaselineMode::none},
                      Case{2, TailMode::renormalize, BaselineMode::group_mean},
                      Case{3, TailMode::bucket, BaselineMode::group_mean},
                      // The kl variant is unbiased for its own objective, E[sum_t KL_t].
                      Case{1, TailMode::bucket, BaselineMode::group_mean, FutureCost::kl},
                      Case{2, TailMode::renormalize, BaselineMode::group_mean, FutureCost::kl},
                      Case{3, TailMode::bucket, BaselineMode::none, FutureCost::kl}));

// The kl variant estimates another gradient than the paper's: judged against E[sum_t c_t]'s exact
// gradient it misses by far more than its standard error (teacher entropy differs across prefixes).
TEST(KlFutureEstimator, DiffersFromThePapersGradient) {
  ObjectiveOptions options;
  options.name = "distil";
  auto paper = make_objective(options);
  options.future_cost = FutureCost::kl;
  auto kl = make_objective(options);
  auto teacher = make_teacher(3);
  auto theta = random_table();
  auto exact_paper = exact_gradient(theta, teacher, *paper);
  auto exact_kl = exact_gradient(theta, teacher, *kl);
  auto estimate = sampled_gradient(theta, teacher, *kl, 40000, 4, 7);
  auto z_paper = ((estimate.mean - exact_paper).abs() / estimate.standard_error.clamp_min(1e-12)).max().item<double>();
  EXPECT_GT(z_paper, 10.0);
  EXPECT_GT((exact_paper - exact_kl).abs().max().item<double>(), 0.05 * exact_paper.abs().max().item<double>());
}

// Entropy over the bins teacher_cross_entropy uses: CE minus it is a KL, >= 0, and 0 when the
// student equals the teacher on those bins.
TEST(TeacherEntropy, CrossEntropyMinusEntropyIsANonNegativeKl) {
  torch::manual_seed(5);
  auto full = torch::randn({6, 7}, torch::kDouble).log_softmax(1);
  auto top = full.topk(3, 1);
  auto ids = std::get<1>(top);
  auto teacher_logp = std::get<0>(top);
  for (auto tail : {TailMode::bucket, TailMode::renormalize}) {
    auto h = teacher_entropy(teacher_logp, tail);
    auto student = torch::randn({6, 7}, torch::kDouble).log_softmax(1);
    EXPECT_TRUE(((teacher_cross_entropy(student, ids, teacher_logp, tail) - h) >= -1e-12).all().item<bool>());
    // The student equal to the teacher: the bucket CE is the entropy itself.
    if (tail == TailMode::bucket) {
      EXPECT_TRUE(torch::allclose(teacher_cross_entropy(full, ids, teacher_logp, tail), h, 1e-9, 1e-12));
    }
  }
}

TEST(CeEstimator, LocalOnlySurrogateMissesTheFutureCreditPart) {
  ObjectiveOptions options;
  options.name = "ce";
  auto ce = make_objective(options);
  options.name = "distil";
  auto distil = make_objective(options);
  auto teacher = make_teacher(1);
  auto theta = random_table();
  // The exact gradient is a property of c_t, identical for both objectives.
  auto exact = exact_gradient(theta, teacher, *distil);
  auto estimate = sampled_gradient(theta, teacher, *ce, 40000, 4, 7);
  // Judge the gap by the distil estimator's standard errors on the same samples (the ce gradient
  // of the root row has no variance at all: its prefix is always empty).
  auto reference = sampled_gradient(theta, teacher, *distil, 40000, 4, 7);
  auto gap = (estimate.mean - exact).abs();
  auto z = gap / reference.standard_error.clamp_min(1e-12);
  std::cout << "ce: root row gap " << gap[0] << " exact " << exact[0] << " max z " << z.max().item<double>()
            << "\n";
  // The root row (the first decision) gets all of its signal from later disagreement.
  EXPECT_GT(z[0].max().item<double>(), 20.0) << "z\n" << z;
  EXPECT_GT(gap[0].max().item<double>(), 0.2 * exact[0].abs().max().item<double>());
}

// One decision, three actions with rewards best 1, worst 0, medium 0.5. The teacher is better than
// the student (expected reward 0.8 vs 0.25) and puts less mass on the worst action (0.2 < 0.55).
TEST(ReverseKlExample, JsdAndReverseKlRaiseTheWorstActionForwardCeDoesNot) {
  auto student = torch::tensor({0.05, 0.55, 0.40}, torch::kDouble);
  auto teacher = torch::tensor({0.75, 0.20, 0.05}, torch::kDouble);
  auto reward = torch::tensor({1.0, 0.0, 0.5}, torch::kDouble);
  ASSERT_GT((teacher * reward).sum().item<double>(), (student * reward).sum().item<double>());
  const double step = 1e-3;
  auto update = [&](auto loss_fn) {
    auto logits = student.log().unsqueeze(0).requires_grad_(true);
    auto loss = loss_fn(logits.log_softmax(1));
    loss.backward();
    return (logits.detach() - step * logits.grad()).softmax(1).squeeze(0);
  };
  auto ids = torch::arange(3, torch::kLong).unsqueeze(0);
  auto teacher_logp = teacher.log().unsqueeze(0);
  auto forward_ce = update([&](const torch::Tensor& lq) {
    return teacher_cross_entropy(lq, ids, teacher_logp, TailMode::bucket).sum();
  });
  auto reverse_kl = update(
      [&](const torch::Tensor& lq) { return generalized_jsd(lq, teacher_logp, 1.0).sum(); });
  auto jsd = update(
      [&](const torch::Tensor& lq) { return generalized_jsd(lq, teacher_logp, 0.5).sum(); });
  const double worst_before = student[1].item<double>();
  EXPECT_LT(forward_ce[1].item<double>(), worst_before);
  EXPECT_GT(reverse_kl[1].item<double>(), worst_before);
  EXPECT_GT(jsd[1].item<double>(), worst_before);
  // And the reverse-KL step lowers the expected reward while the forward-CE step raises it.
  const double reward_before = (student * reward).sum().item<double>();
  EXPECT_GT((forward_ce * reward).sum().item<double>(), reward_before);
  EXPECT_LT((reverse_kl * reward).sum().item<double>(), reward_before);
}

}  // namespace
}  // namespace distil::trainer
