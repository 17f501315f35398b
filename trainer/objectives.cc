#include "trainer/objectives.h"

#include <limits>

#include <cmath>
#include <stdexcept>

namespace distil::trainer {
namespace {

// Log-probabilities are clamped here instead of -inf so that 0 * log 0 terms stay 0 and their
// gradients stay finite (autograd through -inf yields NaN even when multiplied by zero).
constexpr double kLogFloor = -1e9;

torch::Tensor gather_rows(const torch::Tensor& logp, const torch::Tensor& ids) {
  return logp.gather(1, ids);
}

// log q(tail) = log sum over the tokens outside `ids`, computed exactly from the full row.
torch::Tensor tail_log_mass(const torch::Tensor& logp, const torch::Tensor& ids) {
  return logp.scatter(1, ids, kLogFloor).logsumexp(1);
}

// log p(tail) = log(1 - sum p_K) for a teacher known only through its top-k.
torch::Tensor teacher_tail_log_mass(const torch::Tensor& teacher_logp) {
  auto tail = (1.0 - teacher_logp.exp().sum(1)).clamp_min(0.0);
  return tail.log().clamp_min(kLogFloor);
}

torch::Tensor masked_sum(const torch::Tensor& x, const torch::Tensor& mask) {
  return (x * mask).sum();
}

class DistilObjective : public Objective {
 public:
  using Objective::Objective;
  std::string name() const override { return options_.name; }
  bool needs_teacher() const override { return true; }

  PositionTerms position_terms(const torch::Tensor& student_logp,
                               const PositionTargets& targets) const override {
    PositionTerms terms;
    terms.logq_sampled = student_logp.gather(1, targets.sampled.unsqueeze(1)).squeeze(1);
    terms.local = teacher_cross_entropy(student_logp, targets.teacher_ids, targets.teacher_logp,
                                        options_.tail);
    return terms;
  }

  LossOutput sequence_loss(const torch::Tensor& logq_sampled, const torch::Tensor& local,
                           const SequenceBatch& batch) const override {
    const double norm = normalizer(batch);
    auto active = batch.active.to(local.dtype()).unsqueeze(1);
    auto weight = batch.mask.to(local.dtype()) * active;
    auto cost = local * weight;
    auto local_sum = cost.sum();

    LossOutput out;
    auto loss = local_sum;
    auto future_cost = cost.detach();
    if (options_.future_cost == FutureCost::kl) {
      TORCH_CHECK(batch.teacher_entropy.defined(), "algo.future_cost kl needs the teacher's entropy per position");
      future_cost = (local.detach() - batch.teacher_entropy.to(local.dtype())) * weight;
    }
    auto future = discounted_future_sum(future_cost, options_.gamma);
    if (options_.baseline == BaselineMode::group_mean) {
      future = future - leave_one_out_group_mean(future, batch.group, batch.active);
    }
    if (options_.future_clip > 0.0) future = future.clamp(-options_.future_clip, options_.future_clip);
    auto credit = future * weight;
    auto future_term = (logq_sampled * credit).sum();
    if (options_.lambda != 0.0) loss = loss + options_.lambda * future_term;

    const double tokens = std::max(1.0, weight.sum().item<double>());
    out.loss = loss / norm;
    out.parts["local"] = local_sum.item<double>() / norm;
    out.parts["future_credit"] = options_.lambda * future_term.item<double>() / norm;
    out.parts["ce_per_token"] = local_sum.item<double>() / tokens;
    out.parts["future_credit_abs"] = credit.abs().sum().item<double>() / tokens;
    out.parts["active_sequences"] = batch.active.sum().item<double>();
    return out;
  }
};

class GrpoObjective : public Objective {
 public:
  using Objective::Objective;
  std::string name() const override { return "grpo"; }
  // On-policy (one update per batch) the ratio is exactly 1 and needs no old pass.
  bool needs_old_logq(int updates_per_batch) const override { return updates_per_batch > 1; }

  LossOutput sequence_loss(const torch::Tensor& logq_sampled, const torch::Tensor&,
                           const SequenceBatch& batch) const override {
    const double norm = normalizer(batch);
    auto mask = batch.mask.to(logq_sampled.dtype());
    auto advantage = group_normalized_advantage(batch.reward.to(logq_sampled.dtype()),
                                                batch.group, options_.advantage_eps)
                         .unsqueeze(1);
    auto old = batch.old_logq.defined() ? batch.old_logq.to(logq_sampled.dtype())
                                        : logq_sampled.detach();
    auto ratio = (logq_sampled - old).exp();
    auto unclipped = ratio * advantage;
    auto clipped = ratio.clamp(1.0 - options_.clip_low, 1.0 + options_.clip_high) * advantage;
    auto per_token = -torch::min(unclipped, clipped);
    torch::Tensor dual_clipped;
    if (options_.dual_clip > 0.0) {
      // verl's dual clip: for A < 0 a huge ratio would make the loss unbounded; cap it at -c*A.
      auto cap = -options_.dual_clip * advantage;
      auto negative = (advantage < 0).expand_as(per_token);
      dual_clipped = negative & (per_token.detach() > cap);
      per_token = torch::where(negative, torch::min(per_token, cap), per_token);
    }
    LossOutput out;
    out.loss = masked_sum(per_token, mask) / norm;
    const double tokens = std::max(1.0, mask.sum().item<double>());
    auto was_clipped = (clipped.detach() < unclipped.detach()).to(mask.dtype());
    out.parts["policy"] = out.loss.item<double>();
    out.parts["clip_fraction"] = masked_sum(was_clipped, mask).item<double>() / tokens;
    if (dual_clipped.defined()) {
      out.parts["dual_clip_fraction"] = masked_sum(dual_clipped.to(mask.dtype()), mask).item<double>() / tokens;
    }
    out.parts["ratio_mean"] = masked_sum(ratio.detach(), mask).item<double>() / tokens;
    out.parts["advantage_abs"] = advantage.abs().mean().item<double>();
    return out;
  }
};

// Shared by sdpo and opsd: the local term is a per-position divergence, optionally IS-weighted.
class JsdObjective : public Objective {
 public:
  JsdObjective(ObjectiveOptions options, bool on_student_topk)
      : Objective(std::move(options)), on_student_topk_(on_student_topk) {}
  std::string name() const override { return on_student_topk_ ? "sdpo" : "opsd"; }
  bool needs_teacher() const override { return true; }
  bool teacher_scores_student_topk() const override { return on_student_topk_; }
  // sdpo weights each position by the (clipped) importance ratio against the rollout policy.
  bool needs_old_logq(int) const override { return on_student_topk_; }
  // sdpo: an EMA of the student; opsd: the initial weights, shown a reference solution.
  std::string default_teacher_weights() const override { return on_student_topk_ ? "ema" : "initial"; }
  std::string default_teacher_context() const override { return on_student_topk_ ? "feedback" : "reference"; }

  PositionTerms position_terms(const torch::Tensor& student_logp,
                               const PositionTargets& targets) const override {
    PositionTerms terms;
    terms.logq_sampled = student_logp.gather(1, targets.sampled.unsqueeze(1)).squeeze(1);
    auto student_bins = gather_rows(student_logp, targets.teacher_ids);
    auto teacher_bins = targets.teacher_logp.to(student_logp.dtype());
    if (on_student_topk_) {
      // The student's top-k plus one bucket for everything else, on both sides.
      student_bins =
          torch::cat({student_bins, tail_log_mass(student_logp, targets.teacher_ids).unsqueeze(1)}, 1);
      teacher_bins = torch::cat({teacher_bins, teacher_tail_log_mass(teacher_bins).unsqueeze(1)}, 1);
    } else {
      // The teacher's top-k, both distributions renormalised over it.
      student_bins = student_bins.log_softmax(1);
      teacher_bins = teacher_bins.log_softmax(1);
    }
    terms.local = generalized_jsd(student_bins, teacher_bins, options_.jsd_mix);
    return terms;
  }

  LossOutput sequence_loss(const torch::Tensor& logq_sampled, const torch::Tensor& local,
                           const SequenceBatch& batch) const override {
    const double norm = normalizer(batch);
    auto weight = batch.mask.to(local.dtype()) * batch.active.to(local.dtype()).unsqueeze(1);
    torch::Tensor is_weight = torch::ones_like(local);
    if (on_student_topk_ && batch.old_logq.defined()) {
      is_weight = (logq_sampled.detach() - batch.old_logq.to(local.dtype()))
                      .exp()
                      .clamp_max(options_.is_clip);
    }
    auto per_token = local * is_weight * weight;
    LossOutput out;
    out.loss = per_token.sum() / norm;
    const double tokens = std::max(1.0, weight.sum().item<double>());
    out.parts["jsd"] = out.loss.item<double>();
    out.parts["jsd_per_token"] = (local.detach() * weight).sum().item<double>() / tokens;
    out.parts["is_weight_mean"] = (is_weight * weight).sum().item<double>() / tokens;
    out.parts["active_sequences"] = batch.active.sum().item<double>();
    return out;
  }

 private:
  bool on_student_topk_;
};

class SftObjective : public Objective {
 public:
  using Objective::Objective;
  std::string name() const override { return "sft"; }
  ResponseSource response_source() const override {
    return options_.sft_source == SftSource::reference ? ResponseSource::reference_solutions
                                                       : ResponseSource::policy_samples;
  }
  bool trains_on_passed_only() const override { return true; }

  LossOutput sequence_loss(const torch::Tensor& logq_sampled, const torch::Tensor&,
                           const SequenceBatch& batch) const override {
    const double norm = normalizer(batch);
    auto weight =
        batch.mask.to(logq_sampled.dtype()) * batch.active.to(logq_sampled.dtype()).unsqueeze(1);
    LossOutput out;
    out.loss = -(logq_sampled * weight).sum() / norm;
    const double tokens = std::max(1.0, weight.sum().item<double>());
    out.parts["nll"] = out.loss.item<double>();
    out.parts["nll_per_token"] = -(logq_sampled.detach() * weight).sum().item<double>() / tokens;
    out.parts["active_sequences"] = batch.active.sum().item<double>();
    return out;
  }
};

}  // namespace

PositionTerms Objective::position_terms(const torch::Tensor& student_logp,
                                        const PositionTargets& targets) const {
  PositionTerms terms;
  terms.logq_sampled = student_logp.gather(1, targets.sampled.unsqueeze(1)).squeeze(1);
  terms.local = torch::zeros_like(terms.logq_sampled);
  return terms;
}

double Objective::normalizer(const SequenceBatch& batch) const {
  if (batch.normalizer > 0.0) return batch.normalizer;
  if (options_.normalizer == Normalizer::sequences) {
    return std::max<double>(1.0, static_cast<double>(batch.mask.size(0)));
  }
  if (options_.normalizer == Normalizer::active_tokens && batch.active.defined()) {
    return std::max(1.0, (batch.mask * batch.active.to(batch.mask.dtype()).unsqueeze(1)).sum().item<double>());
  }
  return std::max(1.0, batch.mask.sum().item<double>());
}

namespace {

// One row per objective: its name and how to make it.
struct Registration {
  const char* name;
  std::unique_ptr<Objective> (*make)(const ObjectiveOptions&);
};

const std::vector<Registration>& registry() {
  static const std::vector<Registration> rows = {
      {"distil", [](const ObjectiveOptions& o) -> std::unique_ptr<Objective> { return std::make_unique<DistilObjective>(o); }},
      {"ce",  // DistIL without the future-credit term
       [](const ObjectiveOptions& o) -> std::unique_ptr<Objective> {
         auto ce = o;
         ce.lambda = 0.0;
         return std::make_unique<DistilObjective>(ce);
       }},
      {"grpo", [](const ObjectiveOptions& o) -> std::unique_ptr<Objective> { return std::make_unique<GrpoObjective>(o); }},
      {"sdpo", [](const ObjectiveOptions& o) -> std::unique_ptr<Objective> { return std::make_unique<JsdObjective>(o, true); }},
      {"opsd", [](const ObjectiveOptions& o) -> std::unique_ptr<Objective> { return std::make_unique<JsdObjective>(o, false); }},
      {"sft", [](const ObjectiveOptions& o) -> std::unique_ptr<Objective> { return std::make_unique<SftObjective>(o); }},
  };
  return rows;
}

}  // namespace

std::vector<std::string> objective_names() {
  std::vector<std::string> names;
  for (const auto& row : registry()) names.emplace_back(row.name);
  return names;
}

std::unique_ptr<Objective> make_objective(const ObjectiveOptions& options) {
  for (const auto& row : registry()) {
    if (options.name == row.name) return row.make(options);
  }
  // "distil, ce, grpo, sdpo, opsd or sft"
  const auto names = objective_names();
  std::string expected;
  for (std::size_t i = 0; i < names.size(); ++i) {
    expected += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  }
  throw std::invalid_argument("algo.objective: unknown objective '" + options.name + "' (expected " + expected + ")");
}

torch::Tensor teacher_cross_entropy(const torch::Tensor& student_logp, const torch::Tensor& ids,
                                    const torch::Tensor& teacher_logp, TailMode tail) {
  auto student_top = gather_rows(student_logp, ids);
  auto teacher = teacher_logp.to(student_logp.dtype());
  if (tail == TailMode::renormalize) {
    auto p = teacher.softmax(1);
    return -(p * student_top.log_softmax(1)).sum(1);
  }
  auto p = teacher.exp();
  // When the top-k holds all the mass, 1 - sum p is rounding noise (~1e-16 in double, ~1e-7 in
  // float) that would multiply the log-floor of an empty student tail; below the noise level it is 0.
  const double noise = 64.0 * (p.scalar_type() == torch::kDouble ? std::numeric_limits<double>::epsilon()
                                                                  : std::numeric_limits<float>::epsilon());
  auto p_tail = 1.0 - p.sum(1);
  p_tail = p_tail.masked_fill(p_tail < noise, 0.0);
  auto log_q_tail = tail_log_mass(student_logp, ids);
  return -(p * student_top).sum(1) - p_tail * log_q_tail;
}

torch::Tensor teacher_entropy(const torch::Tensor& teacher_logp, TailMode tail) {
  if (tail == TailMode::renormalize) {
    auto lp = teacher_logp.log_softmax(1);
    return -(lp.exp() * lp).sum(1);
  }
  auto lp = teacher_logp.clamp_min(kLogFloor);
  auto tail_lp = teacher_tail_log_mass(teacher_logp);
  return -(lp.exp() * lp).sum(1) - tail_lp.exp() * tail_lp;
}

torch::Tensor generalized_jsd(const torch::Tensor& student_logp_bins,
                              const torch::Tensor& teacher_logp_bins, double mix) {
  if (mix < 0.0 || mix > 1.0) throw std::invalid_argument("jsd mix must be in [0, 1]");
  auto lq = student_logp_bins.clamp_min(kLogFloor);
  auto lp = teacher_logp_bins.clamp_min(kLogFloor);
  auto p = lp.exp();
  auto q = lq.exp();
  if (mix == 0.0) return (p * (lp - lq)).sum(1);
  if (mix == 1.0) return (q * (lq - lp)).sum(1);
  auto lm = torch::logsumexp(torch::stack({lq + std::log1p(-mix), lp + std::log(mix)}), 0);
  return mix * (p * (lp - lm)).sum(1) + (1.0 - mix) * (q * (lq - lm)).sum(1);
}

torch::Tensor discounted_future_sum(const torch::Tensor& x, double gamma) {
  TORCH_CHECK(x.dim() == 2, "discounted_future_sum expects [B,T]");
  auto values = x.detach().to(torch::kCPU, torch::kDouble).contiguous();
  auto out = torch::zeros_like(values);
  const int64_t rows = values.size(0), cols = values.size(1);
  auto in_a = values.accessor<double, 2>();
  auto out_a = out.accessor<double, 2>();
  for (int64_t b = 0; b < rows; ++b) {
    double running = 0.0;  // sum_{i>t} gamma^{i-t-1} x_i for the current t
    for (int64_t t = cols - 1; t >= 0; --t) {
      out_a[b][t] = running;
      running = in_a[b][t] + gamma * running;
    }
  }
  return out.to(x.device(), x.scalar_type());
}

torch::Tensor leave_one_out_group_mean(const torch::Tensor& values, const torch::Tensor& group,
                                       const torch::Tensor& weight) {
  const int64_t groups = group.numel() == 0 ? 0 : group.max().item<int64_t>() + 1;
  auto w = weight.to(values.dtype()).to(values.device());
  auto g = group.to(torch::kLong).to(values.device());
  auto sums = torch::zeros({groups, values.size(1)}, values.options())
                  .index_add(0, g, values * w.unsqueeze(1));
  auto counts = torch::zeros({groups}, values.options()).index_add(0, g, w);
  auto others_sum = sums.index_select(0, g) - values * w.unsqueeze(1);
  auto others_count = (counts.index_select(0, g) - w).unsqueeze(1);
  return torch::where(others_count > 0.5, others_sum / others_count.clamp_min(1.0),
                      torch::zeros_like(values));
}

torch::Tensor group_normalized_advantage(const torch::Tensor& reward, const torch::Tensor& group,
                                         double eps) {
  const int64_t groups = group.numel() == 0 ? 0 : group.max().item<int64_t>() + 1;
  auto r = reward.to(torch::kDouble);
  auto g = group.to(torch::kLong).to(reward.device());
  auto counts = torch::zeros({groups}, r.options()).index_add(0, g, torch::ones_like(r));
  auto mean = torch::zeros({groups}, r.options()).index_add(0, g, r) / counts.clamp_min(1.0);
  auto centered = r - mean.index_select(0, g);
  // Unbiased (n-1) standard deviation, as GRPO implementations use; a lone sample has no spread.
  auto var = torch::zeros({groups}, r.options()).index_add(0, g, centered * centered) /
             (counts - 1.0).clamp_min(1.0);
  auto std = var.sqrt().index_select(0, g);
  auto adv = centered / (std + eps);
  adv = torch::where(counts.index_select(0, g) > 1.5, adv, torch::zeros_like(adv));
  return adv.to(reward.scalar_type());
}

}  // namespace distil::trainer
