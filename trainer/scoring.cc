#include "trainer/scoring.h"

#include <algorithm>
#include <stdexcept>

#include "trainer/model/generate.h"

namespace distil::trainer {
namespace {

torch::Device model_device(model::CausalLM& model) {
  for (const auto& p : model->parameters()) return p.device();
  return torch::kCPU;
}

// Flat indices (into [B*T]) of the hidden states that predict each response token.
torch::Tensor predicting_positions(const model::PackedBatch& packed) {
  const int64_t width = packed.input_ids.size(1);
  std::vector<int64_t> index;
  for (std::size_t b = 0; b < packed.response_start.size(); ++b) {
    if (packed.response_start[b] < 1) {
      throw std::invalid_argument("a sequence has an empty prompt; nothing predicts its first token");
    }
    for (int64_t t = 0; t < packed.response_length[b]; ++t) {
      index.push_back(static_cast<int64_t>(b) * width + packed.response_start[b] + t - 1);
    }
  }
  return torch::tensor(index, torch::kLong).to(packed.input_ids.device());
}

// Consecutive [begin, end) ranges of sequences whose padded size stays within the budget.
std::vector<std::pair<std::size_t, std::size_t>> split_by_budget(const TokenRows& prompts,
                                                                 const TokenRows& responses,
                                                                 int64_t budget) {
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  std::size_t begin = 0;
  int64_t widest = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const int64_t len = static_cast<int64_t>(prompts[i].size() + responses[i].size());
    const int64_t new_widest = std::max(widest, len);
    if (i > begin && new_widest * static_cast<int64_t>(i - begin + 1) > budget) {
      ranges.emplace_back(begin, i);
      begin = i;
      widest = len;
    } else {
      widest = new_widest;
    }
  }
  if (begin < prompts.size()) ranges.emplace_back(begin, prompts.size());
  return ranges;
}

torch::Tensor slice_rows(const torch::Tensor& t, int64_t begin, int64_t end) {
  return t.defined() ? t.slice(0, begin, end) : t;
}

}  // namespace

void for_each_response_logprobs(model::CausalLM& model, const TokenRows& prompts,
                                const TokenRows& responses, int32_t pad_id, int64_t chunk_tokens,
                                int64_t token_budget,
                                const std::function<void(const torch::Tensor&, int64_t)>& fn) {
  if (prompts.size() != responses.size()) throw std::invalid_argument("prompts/responses differ in count");
  torch::NoGradGuard no_grad;
  const auto device = model_device(model);
  int64_t first = 0;
  for (const auto& [begin, end] : split_by_budget(prompts, responses, token_budget)) {
    TokenRows p(prompts.begin() + begin, prompts.begin() + end);
    TokenRows r(responses.begin() + begin, responses.begin() + end);
    auto packed = model::pack_sequences(p, r, pad_id, device);
    auto hidden = model->hidden_states(packed.input_ids, packed.attention_mask);
    auto rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, predicting_positions(packed));
    for (int64_t c = 0; c < rows.size(0); c += chunk_tokens) {
      auto chunk = rows.slice(0, c, std::min(rows.size(0), c + chunk_tokens));
      fn(model->logits(chunk).to(torch::kFloat).log_softmax(-1), first + c);
    }
    first += rows.size(0);
  }
}

PositionTopK response_topk(model::CausalLM& model, const TokenRows& prompts, const TokenRows& responses,
                           int32_t pad_id, int64_t k, int64_t chunk_tokens, int64_t token_budget) {
  std::vector<torch::Tensor> ids, logp;
  for_each_response_logprobs(model, prompts, responses, pad_id, chunk_tokens, token_budget,
                             [&](const torch::Tensor& lp, int64_t) {
                               auto top = lp.topk(std::min<int64_t>(k, lp.size(1)), 1);
                               logp.push_back(std::get<0>(top).cpu());
                               ids.push_back(std::get<1>(top).cpu());
                             });
  if (ids.empty()) return {torch::zeros({0, k}, torch::kLong), torch::zeros({0, k})};
  return {torch::cat(ids), torch::cat(logp)};
}

torch::Tensor response_logprobs_at(model::CausalLM& model, const TokenRows& prompts,
                                   const TokenRows& responses, const torch::Tensor& ids, int32_t pad_id,
                                   int64_t chunk_tokens, int64_t token_budget) {
  std::vector<torch::Tensor> out;
  for_each_response_logprobs(model, prompts, responses, pad_id, chunk_tokens, token_budget,
                             [&](const torch::Tensor& lp, int64_t first) {
                               auto rows = ids.slice(0, first, first + lp.size(0)).to(lp.device());
                               out.push_back(lp.gather(1, rows).cpu());
                             });
  if (out.empty()) return torch::zeros({0, ids.size(1)});
  return torch::cat(out);
}

LossOutput student_backward(model::CausalLM& model, const Objective& objective,
                            const StudentMicroBatch& micro, int32_t pad_id, int64_t chunk_tokens) {
  const auto device = model_device(model);
  auto packed = model::pack_sequences(micro.prompts, micro.responses, pad_id, device);
  auto hidden = model->hidden_states(packed.input_ids, packed.attention_mask);
  auto rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, predicting_positions(packed));
  auto rows_leaf = rows.detach().requires_grad_(true);
  const int64_t n = rows.size(0);

  auto targets_on = [&](int64_t begin, int64_t end) {
    PositionTargets t;
    t.sampled = slice_rows(micro.targets.sampled, begin, end).to(device);
    if (micro.targets.teacher_ids.defined()) {
      t.teacher_ids = slice_rows(micro.targets.teacher_ids, begin, end).to(device);
      t.teacher_logp = slice_rows(micro.targets.teacher_logp, begin, end).to(device);
    }
    return t;
  };
  auto chunk_terms = [&](int64_t begin, int64_t end) {
    auto logp = model->logits(rows_leaf.slice(0, begin, end)).to(torch::kFloat).log_softmax(-1);
    return objective.position_terms(logp, targets_on(begin, end));
  };

  // Pass 1: every position's terms, without grad.
  std::vector<torch::Tensor> logq_parts, local_parts;
  {
    torch::NoGradGuard no_grad;
    for (int64_t c = 0; c < n; c += chunk_tokens) {
      auto terms = chunk_terms(c, std::min(n, c + chunk_tokens));
      logq_parts.push_back(terms.logq_sampled);
      local_parts.push_back(terms.local);
    }
  }
  auto logq = torch::cat(logq_parts).requires_grad_(true);
  auto local = torch::cat(local_parts).requires_grad_(true);

  // The sequence loss on [b,Tmax] layouts of those terms.
  const int64_t b = static_cast<int64_t>(micro.responses.size());
  int64_t t_max = 0;
  for (const auto& r : micro.responses) t_max = std::max<int64_t>(t_max, r.size());
  std::vector<int64_t> padded_index;
  for (int64_t i = 0; i < b; ++i) {
    for (std::size_t t = 0; t < micro.responses[i].size(); ++t) padded_index.push_back(i * t_max + t);
  }
  auto index = torch::tensor(padded_index, torch::kLong).to(device);
  auto lay_out = [&](const torch::Tensor& flat) {
    return torch::zeros({b * t_max}, flat.options()).index_put({index}, flat).view({b, t_max});
  };
  SequenceBatch batch = micro.batch;
  batch.mask = batch.mask.to(device);
  batch.group = batch.group.to(device);
  batch.reward = batch.reward.to(device);
  batch.active = batch.active.to(device);
  if (batch.old_logq.defined()) batch.old_logq = batch.old_logq.to(device);
  if (objective.options().future_cost == FutureCost::kl && micro.targets.teacher_logp.defined()) {
    batch.teacher_entropy = lay_out(teacher_entropy(micro.targets.teacher_logp.to(device).to(torch::kFloat),
                                                    objective.options().tail));
  }
  LossOutput out = objective.sequence_loss(lay_out(logq), lay_out(local), batch);
  out.loss.backward();

  // Pass 2: each chunk again with grad, seeded with the sequence loss's gradient.
  const auto logq_grad = logq.grad();
  const auto local_grad = local.grad();
  for (int64_t c = 0; c < n; c += chunk_tokens) {
    const int64_t end = std::min(n, c + chunk_tokens);
    auto terms = chunk_terms(c, end);
    std::vector<torch::Tensor> outputs, grads;
    if (terms.logq_sampled.requires_grad() && logq_grad.defined()) {
      outputs.push_back(terms.logq_sampled);
      grads.push_back(logq_grad.slice(0, c, end));
    }
    if (terms.local.requires_grad() && local_grad.defined()) {
      outputs.push_back(terms.local);
      grads.push_back(local_grad.slice(0, c, end));
    }
    if (!outputs.empty()) torch::autograd::backward(outputs, grads);
  }
  // Pass 3: the decoder, once.
  if (rows_leaf.grad().defined()) rows.backward(rows_leaf.grad());
  out.loss = out.loss.detach();
  return out;
}

}  // namespace distil::trainer
