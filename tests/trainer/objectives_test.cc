// Building blocks of the objectives against hand-computed values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "trainer/objectives.h"

namespace distil::trainer {
namespace {

TEST(DiscountedFutureSum, SumsStrictlyLaterPositionsWithDiscount) {
  auto x = torch::tensor({{1.0, 2.0, 4.0}, {3.0, 0.0, 5.0}}, torch::kDouble);
  auto f = discounted_future_sum(x, 0.5);
  // t=0: x1 + 0.5 x2; t=1: x2; t=2: 0
  auto expected = torch::tensor({{2.0 + 2.0, 4.0, 0.0}, {0.0 + 2.5, 5.0, 0.0}}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(f, expected)) << f;
}

TEST(LeaveOneOutGroupMean, AveragesOnlyOtherActiveMembers) {
  auto v = torch::tensor({{1.0}, {3.0}, {5.0}, {7.0}}, torch::kDouble);
  auto g = torch::tensor({0, 0, 0, 1}, torch::kLong);
  auto w = torch::tensor({1.0, 1.0, 0.0, 1.0}, torch::kDouble);
  auto b = leave_one_out_group_mean(v, g, w);
  // row0: others active = {3}; row1: {1}; row2 (inactive): {1,3} -> 2; row3: none -> 0
  auto expected = torch::tensor({{3.0}, {1.0}, {2.0}, {0.0}}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(b, expected)) << b;
}

TEST(GroupNormalizedAdvantage, UsesUnbiasedStdPerGroupAndZeroForSingletons) {
  auto r = torch::tensor({1.0, 0.0, 0.0, 1.0, 0.5}, torch::kDouble);
  auto g = torch::tensor({0, 0, 0, 0, 1}, torch::kLong);
  auto a = group_normalized_advantage(r, g, 0.0);
  const double sd = std::sqrt((0.25 * 4) / 3.0);
  EXPECT_NEAR(a[0].item<double>(), 0.5 / sd, 1e-9);
  EXPECT_NEAR(a[1].item<double>(), -0.5 / sd, 1e-9);
  EXPECT_EQ(a[4].item<double>(), 0.0);
}

TEST(TeacherCrossEntropy, BucketWithAllButOneTokenEqualsFullCrossEntropy) {
  torch::manual_seed(0);
  auto lq = torch::randn({4, 5}, torch::kDouble).log_softmax(1);
  auto lp = torch::randn({4, 5}, torch::kDouble).log_softmax(1);
  auto full = -(lp.exp() * lq).sum(1);
  auto top = lp.topk(4, 1);
  auto c = teacher_cross_entropy(lq, std::get<1>(top), std::get<0>(top), TailMode::bucket);
  EXPECT_TRUE(torch::allclose(c, full, 1e-9, 1e-9));
  auto all = lp.topk(5, 1);
  auto c_all = teacher_cross_entropy(lq, std::get<1>(all), std::get<0>(all), TailMode::bucket);
  EXPECT_TRUE(torch::allclose(c_all, full, 1e-9, 1e-9));
}

TEST(TeacherCrossEntropy, RenormalizeUsesOnlyTheTopKSet) {
  auto lq = torch::tensor({{0.1, 0.2, 0.7}}, torch::kDouble).log();
  auto ids = torch::tensor({{2, 1}}, torch::kLong);
  auto lp = torch::tensor({{0.6, 0.2}}, torch::kDouble).log();
  auto c = teacher_cross_entropy(lq, ids, lp, TailMode::renormalize);
  const double expected = -(0.75 * std::log(0.7 / 0.9) + 0.25 * std::log(0.2 / 0.9));
  EXPECT_NEAR(c.item<double>(), expected, 1e-12);
  // Gradient is finite even with an empty tail.
  auto logits = torch::zeros({1, 2}, torch::kDouble).requires_grad_(true);
  auto all = torch::tensor({{0, 1}}, torch::kLong);
  auto c2 = teacher_cross_entropy(logits.log_softmax(1), all,
                                  torch::tensor({{0.5, 0.5}}, torch::kDouble).log(), TailMode::bucket);
  c2.sum().backward();
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
}

TEST(GeneralizedJsd, EndpointsAreForwardAndReverseKl) {
  auto lq = torch::tensor({{0.2, 0.3, 0.5}}, torch::kDouble).log();
  auto lp = torch::tensor({{0.6, 0.3, 0.1}}, torch::kDouble).log();
  const double forward = (lp.exp() * (lp - lq)).sum().item<double>();
  const double reverse = (lq.exp() * (lq - lp)).sum().item<double>();
  EXPECT_NEAR(generalized_jsd(lq, lp, 0.0).item<double>(), forward, 1e-12);
  EXPECT_NEAR(generalized_jsd(lq, lp, 1.0).item<double>(), reverse, 1e-12);
  // Symmetric JSD at 0.5: 0.5 KL(p||m) + 0.5 KL(q||m), m the average.
  auto m = (lq.exp() + lp.exp()) / 2.0;
  const double js = 0.5 * (lp.exp() * (lp - m.log())).sum().item<double>() +
                    0.5 * (lq.exp() * (lq - m.log())).sum().item<double>();
  EXPECT_NEAR(generalized_jsd(lq, lp, 0.5).item<double>(), js, 1e-12);
  EXPECT_NEAR(generalized_jsd(lq, lq, 0.5).item<double>(), 0.0, 1e-12);
  EXPECT_THROW(generalized_jsd(lq, lp, 1.5), std::invalid_argument);
}

SequenceBatch two_sequence_batch() {
  SequenceBatch b;
  b.mask = torch::tensor({{1.0, 1.0}, {1.0, 0.0}}, torch::kDouble);
  b.group = torch::tensor({0, 0}, torch::kLong);
  b.reward = torch::tensor({1.0, 0.0}, torch::kDouble);
  b.active = torch::ones({2}, torch::kDouble);
  return b;
}

TEST(Grpo, OnPolicyGradientIsAdvantageWeightedScoreAndClipsOffPolicy) {
  ObjectiveOptions o;
  o.name = "grpo";
  auto grpo = make_objective(o);
  auto logq = torch::tensor({{-1.0, -2.0}, {-0.5, 0.0}}, torch::kDouble).requires_grad_(true);
  auto batch = two_sequence_batch();
  auto out = grpo->sequence_loss(logq, torch::zeros_like(logq), batch);
  out.loss.backward();
  // Advantages +-1/sqrt(0.5) with eps ~0; on-policy ratio 1, gradient -A/norm per token (norm 3).
  const double a = 0.5 / std::sqrt(0.5);
  EXPECT_NEAR(logq.grad()[0][0].item<double>(), -a / 3.0, 1e-5);
  EXPECT_NEAR(logq.grad()[1][0].item<double>(), a / 3.0, 1e-5);
  EXPECT_EQ(logq.grad()[1][1].item<double>(), 0.0);  // padding
  // Off-policy: ratio 1.5 > 1.28 with positive advantage is clipped: no gradient.
  auto logq2 = torch::tensor({{std::log(1.5), 0.0}, {0.0, 0.0}}, torch::kDouble).requires_grad_(true);
  batch.old_logq = torch::zeros({2, 2}, torch::kDouble);
  auto out2 = grpo->sequence_loss(logq2, torch::zeros_like(logq2), batch);
  out2.loss.backward();
  EXPECT_EQ(logq2.grad()[0][0].item<double>(), 0.0);
  EXPECT_NE(logq2.grad()[0][1].item<double>(), 0.0);
  EXPECT_GT(out2.parts["clip_fraction"], 0.0);
}

TEST(Grpo, DualClipCapsTheLossOfNegativeAdvantagesAtCTimesA) {
  // verl's clip_ratio_c: with A < 0 and ratio 5 > c = 3 the per-token loss is 3|A| and carries no
  // gradient; without the dual clip it is 5|A| with gradient 5|A| per token.
  auto batch = two_sequence_batch();
  batch.old_logq = torch::zeros({2, 2}, torch::kDouble);
  const double a = 0.5 / std::sqrt(0.5);
  for (const double c : {3.0, 0.0}) {
    ObjectiveOptions o;
    o.name = "grpo";
    o.dual_clip = c;
    o.advantage_eps = 0.0;
    auto grpo = make_objective(o);
    auto logq = torch::tensor({{0.0, 0.0}, {std::log(5.0), 0.0}}, torch::kDouble).requires_grad_(true);
    auto out = grpo->sequence_loss(logq, torch::zeros_like(logq), batch);
    out.loss.backward();
    // Row 0 (A = +a, ratio 1): -a per token; row 1, token 0 (A = -a, ratio 5): 3a or 5a.
    const double expected = (-a - a + (c > 0 ? 3.0 : 5.0) * a) / 3.0;
    EXPECT_NEAR(out.loss.item<double>(), expected, 1e-9) << "dual_clip " << c;
    EXPECT_NEAR(logq.grad()[1][0].item<double>(), c > 0 ? 0.0 : 5.0 * a / 3.0, 1e-9) << "dual_clip " << c;
    if (c > 0) {
      EXPECT_NEAR(out.parts["dual_clip_fraction"], 1.0 / 3.0, 1e-9);
    }
  }
}

TEST(Distil, ActiveTokensNormalizerCountsOnlyRolloutsInTheLoss) {
  // Row 1 has no teacher context: it adds nothing to the loss and nothing to the normaliser, so
  // the loss scale does not move with the masked fraction.
  auto batch = two_sequence_batch();
  batch.active = torch::tensor({1.0, 0.0}, torch::kDouble);
  auto local = torch::tensor({{0.5, 1.5}, {7.0, 0.0}}, torch::kDouble);
  auto logq = torch::zeros({2, 2}, torch::kDouble);
  ObjectiveOptions o;
  o.name = "ce";
  EXPECT_NEAR(make_objective(o)->sequence_loss(logq, local, batch).loss.item<double>(), 2.0 / 2.0, 1e-12);
  o.normalizer = Normalizer::tokens;
  EXPECT_NEAR(make_objective(o)->sequence_loss(logq, local, batch).loss.item<double>(), 2.0 / 3.0, 1e-12);
}

TEST(Sdpo, ImportanceWeightIsClipped) {
  ObjectiveOptions o;
  o.name = "sdpo";
  auto sdpo = make_objective(o);
  ASSERT_TRUE(sdpo->teacher_scores_student_topk());
  auto batch = two_sequence_batch();
  auto local = torch::ones({2, 2}, torch::kDouble).requires_grad_(true);
  auto logq = torch::tensor({{std::log(5.0), 0.0}, {0.0, 0.0}}, torch::kDouble);
  batch.old_logq = torch::zeros({2, 2}, torch::kDouble);
  auto out = sdpo->sequence_loss(logq, local, batch);
  out.loss.backward();
  EXPECT_NEAR(local.grad()[0][0].item<double>(), 2.0 / 3.0, 1e-12);  // weight 5 clipped at 2
  EXPECT_NEAR(local.grad()[0][1].item<double>(), 1.0 / 3.0, 1e-12);
}

TEST(Distil, InactiveSequencesContributeNothing) {
  ObjectiveOptions o;
  auto distil = make_objective(o);
  auto batch = two_sequence_batch();
  batch.active = torch::tensor({1.0, 0.0}, torch::kDouble);
  auto local = torch::ones({2, 2}, torch::kDouble).requires_grad_(true);
  auto logq = torch::zeros({2, 2}, torch::kDouble).requires_grad_(true);
  auto out = distil->sequence_loss(logq, local, batch);
  out.loss.backward();
  EXPECT_EQ(local.grad()[1][0].item<double>(), 0.0);
  EXPECT_EQ(logq.grad()[1][0].item<double>(), 0.0);
  // Sequence 0: future sum at t=0 is c_1 = 1 (no active sibling, baseline 0), divided by the
  // active tokens (2: sequence 1 is masked out of the normaliser too).
  EXPECT_NEAR(logq.grad()[0][0].item<double>(), 1.0 / 2.0, 1e-12);
}

TEST(MakeObjective, UnknownNameIsAnErrorNamingTheKey) {
  ObjectiveOptions o;
  o.name = "ppo";
  try {
    make_objective(o);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("algo.objective"), std::string::npos);
  }
  for (const auto& name : objective_names()) {
    o.name = name;
    EXPECT_EQ(make_objective(o)->name(), name);
  }
}

// The training loop prepares a batch from these answers alone (issue 19 item 1); they are what
// the names used to decide.
TEST(MakeObjective, EachObjectiveSaysWhatTheLoopMustSupply) {
  auto make = [](const std::string& name) {
    ObjectiveOptions o;
    o.name = name;
    return make_objective(o);
  };
  for (const std::string name : {"distil", "ce", "sdpo", "opsd"}) {
    EXPECT_TRUE(make(name)->needs_teacher()) << name;
    EXPECT_FALSE(make(name)->trains_on_passed_only()) << name;
  }
  for (const std::string name : {"grpo", "sft"}) EXPECT_FALSE(make(name)->needs_teacher()) << name;
  EXPECT_TRUE(make("sdpo")->teacher_scores_student_topk());
  for (const std::string name : {"distil", "ce", "opsd", "grpo", "sft"}) {
    EXPECT_FALSE(make(name)->teacher_scores_student_topk()) << name;
  }
  EXPECT_FALSE(make("grpo")->needs_old_logq(1));
  EXPECT_TRUE(make("grpo")->needs_old_logq(2));
  EXPECT_TRUE(make("sdpo")->needs_old_logq(1));
  for (const std::string name : {"distil", "ce", "opsd", "sft"}) EXPECT_FALSE(make(name)->needs_old_logq(2)) << name;
  EXPECT_TRUE(make("sft")->trains_on_passed_only());
  EXPECT_FALSE(make("grpo")->trains_on_passed_only());
  for (const auto& name : objective_names()) {
    EXPECT_EQ(make(name)->response_source(), ResponseSource::policy_samples) << name;
  }
  ObjectiveOptions reference;
  reference.name = "sft";
  reference.sft_source = SftSource::reference;
  EXPECT_EQ(make_objective(reference)->response_source(), ResponseSource::reference_solutions);
  EXPECT_EQ(make("sdpo")->default_teacher_weights(), "ema");
  EXPECT_EQ(make("opsd")->default_teacher_weights(), "initial");
  EXPECT_EQ(make("opsd")->default_teacher_context(), "reference");
  for (const std::string name : {"distil", "ce", "sdpo"}) {
    EXPECT_EQ(make(name)->default_teacher_context(), "feedback") << name;
  }
  EXPECT_EQ(make("distil")->default_teacher_weights(), "current");
}

}  // namespace
}  // namespace distil::trainer
