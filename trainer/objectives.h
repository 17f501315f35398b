// Training objectives (DESIGN.md "The DistIL objective" and "Baselines"), one interface selected by
// name: distil, ce, grpo, sdpo, opsd, sft.
//
// An objective is split in two so the student's [B,T,V] logits never have to exist at once:
//  1. position_terms(): per response position, from one chunk of student log-probabilities
//     [N,V] (with grad), the scalars the loss needs: log q(y_t) and a local term (the teacher
//     cross-entropy c_t for distil/ce, a JSD for sdpo/opsd, zero for grpo/sft).
//  2. sequence_loss(): from those scalars laid out as [B,T] plus per-sequence data (groups,
//     rewards, masks), the scalar surrogate whose gradient is the objective's gradient.
// The training loop runs (1) chunk by chunk and (2) once; tests can run both on any tensor.
//
// What the loop has to prepare (a teacher, the student's own top-k, old log-probs, which rollouts
// count) it asks the objective through the capability methods below; it never compares names. A
// new objective is one class in objectives.cc and one row in its registry.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace distil::trainer {

enum class TailMode { bucket, renormalize };
// What the future-credit term sums over later positions. ce: the paper's c_t (teacher entropy
// plus KL). kl: c_t minus the teacher's entropy, so a rollout earns nothing for merely reaching
// contexts where the teacher is confident (a variant: an unbiased estimator of E[sum_t KL_t]).
enum class FutureCost { ce, kl };
enum class BaselineMode { none, group_mean };
// active_tokens: response tokens of the rollouts that take part in the loss (those with a
// teacher context; SDPO's convention), so the loss scale does not move with the masked fraction.
enum class Normalizer { active_tokens, tokens, sequences };
// sft: the responses it imitates. successful: the rollouts that passed; reference: the tasks'
// reference solutions, with no sampling and no env feedback.
enum class SftSource { successful, reference };
// Where the responses of a batch come from.
enum class ResponseSource { policy_samples, reference_solutions };

struct ObjectiveOptions {
  std::string name = "distil";  // distil | ce | grpo | sdpo | opsd | sft
  // distil / ce
  double lambda = 1.0;  // weight of the future-credit term (ce forces 0)
  double gamma = 1.0;   // discount of later disagreement
  BaselineMode baseline = BaselineMode::group_mean;
  FutureCost future_cost = FutureCost::ce;
  double future_clip = 0.0;  // > 0: each token's future advantage clipped to [-c, c] (variant, biased)
  TailMode tail = TailMode::bucket;
  Normalizer normalizer = Normalizer::active_tokens;
  // grpo
  double clip_low = 0.2;
  double clip_high = 0.28;
  double dual_clip = 3.0;  // verl's clip_ratio_c: negative-advantage loss capped at c * |A|; 0 = off
  double advantage_eps = 1e-6;
  // sdpo (alpha) / opsd (beta): generalised JSD mixing, 0 forward KL, 1 reverse KL
  double jsd_mix = 0.5;
  double is_clip = 2.0;  // sdpo: importance weight clipped at this value
  // sft
  SftSource sft_source = SftSource::successful;
};

// Per-position inputs, one row per response position, aligned with the student log-prob rows.
struct PositionTargets {
  torch::Tensor sampled;       // [N] int64, the token taken at this position
  torch::Tensor teacher_ids;   // [N,K] int64 (distil/ce/opsd: teacher's top-k; sdpo: student's)
  torch::Tensor teacher_logp;  // [N,K] float, teacher log-probs at teacher_ids
};

struct PositionTerms {
  torch::Tensor logq_sampled;  // [N] log q(y_t), with grad
  torch::Tensor local;         // [N] local term, with grad (zeros for grpo/sft)
};

// Per-sequence data for sequence_loss. All [B,T] tensors are zero-padded past each length.
struct SequenceBatch {
  torch::Tensor mask;          // [B,T] float 1 at real response positions
  torch::Tensor group;         // [B] int64 prompt-group index (siblings share it)
  torch::Tensor reward;        // [B] float
  torch::Tensor active;        // [B] float 1 where the sequence takes part in the loss (distil/
                               // ce/sdpo/opsd: it has a teacher context; sft: it is a target)
  torch::Tensor old_logq;      // [B,T] float: log q_old(y_t) (grpo off-policy, sdpo IS); may be
                               // undefined, meaning "the current policy" (ratio exactly 1)
  double normalizer = 0.0;     // > 0: divide by this constant; 0: derive from options.normalizer
  torch::Tensor teacher_entropy;  // [B,T] float: H of the teacher's bins (distil with future_cost kl)
};

struct LossOutput {
  torch::Tensor loss;                   // scalar surrogate to backpropagate
  std::map<std::string, double> parts;  // logged values (detached): local, future_credit, ...
};

class Objective {
 public:
  explicit Objective(ObjectiveOptions options) : options_(std::move(options)) {}
  virtual ~Objective() = default;
  const ObjectiveOptions& options() const { return options_; }
  virtual std::string name() const = 0;

  // --- what the training loop must supply ------------------------------------------------------
  // Where the batch's responses come from: sampled from the policy and graded by distil-env, or the
  // tasks' reference solutions (sft with sft_source reference: nothing sampled, no env needed).
  virtual ResponseSource response_source() const { return ResponseSource::policy_samples; }
  // A teacher (teacher.weights) and, per response position, its log-probs in targets.
  virtual bool needs_teacher() const { return false; }
  // The teacher scores the student's own top-k (algo.sdpo_top_k, from a no-grad student pass)
  // instead of returning its own top-k (algo.top_k). A remote top-k teacher cannot do this.
  virtual bool teacher_scores_student_topk() const { return false; }  // sdpo
  // log q_old(y_t) of the rollout policy from a no-grad pass before the first update.
  // updates_per_batch is algo.off_policy_minibatches (1: every update uses the rollout policy).
  virtual bool needs_old_logq(int /*updates_per_batch*/) const { return false; }  // grpo off-policy, sdpo
  // Without a teacher: whether only the rollouts that passed take part in the loss (sft) or all.
  virtual bool trains_on_passed_only() const { return false; }
  // teacher.weights and teacher.context when the config says "auto".
  virtual std::string default_teacher_weights() const { return "current"; }
  virtual std::string default_teacher_context() const { return "feedback"; }

  // student_logp: [N,V] log-softmax rows (with grad).
  virtual PositionTerms position_terms(const torch::Tensor& student_logp,
                                       const PositionTargets& targets) const;
  virtual LossOutput sequence_loss(const torch::Tensor& logq_sampled, const torch::Tensor& local,
                                   const SequenceBatch& batch) const = 0;

 protected:
  double normalizer(const SequenceBatch& batch) const;
  ObjectiveOptions options_;
};

// Throws std::invalid_argument naming the objective when unknown.
std::unique_ptr<Objective> make_objective(const ObjectiveOptions& options);
// The registered names, in registration order.
std::vector<std::string> objective_names();

// --- building blocks, exposed for tests ----------------------------------------------------------
// c_t = -sum_{a in K} p(a) log q(a) [- p(tail) log q(tail)] (bucket) or the renormalised version.
torch::Tensor teacher_cross_entropy(const torch::Tensor& student_logp, const torch::Tensor& ids,
                                    const torch::Tensor& teacher_logp, TailMode tail);
// Entropy of the teacher's distribution over the same bins teacher_cross_entropy uses (top-k plus
// the tail bucket, or the renormalised top-k), [N]: c_t minus this is the KL, >= 0.
torch::Tensor teacher_entropy(const torch::Tensor& teacher_logp, TailMode tail);
// Generalised JSD (as in GKD/TRL): mix 0 = KL(p||q) (forward), 1 = KL(q||p) (reverse), else
// mix*KL(p||m) + (1-mix)*KL(q||m) with m = mix*p + (1-mix)*q. Inputs are log-probs over the same
// bins [N,K]; returns [N].
torch::Tensor generalized_jsd(const torch::Tensor& student_logp_bins,
                              const torch::Tensor& teacher_logp_bins, double mix);
// Sum_{i>t} gamma^{i-t-1} x_i along dim 1 of a [B,T] tensor.
torch::Tensor discounted_future_sum(const torch::Tensor& x, double gamma);
// Leave-one-out mean over other members of the same group: [B,T] values, [B] groups, [B] weights
// (0 excludes a row from the others' baselines). Rows with no other member get 0.
torch::Tensor leave_one_out_group_mean(const torch::Tensor& values, const torch::Tensor& group,
                                       const torch::Tensor& weight);
// (r - mean_g) / (std_g + eps) per group, [B].
torch::Tensor group_normalized_advantage(const torch::Tensor& reward, const torch::Tensor& group,
                                         double eps);

}  // namespace distil::trainer
