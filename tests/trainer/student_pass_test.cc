// The chunked student pass (trainer/scoring.cc: student_backward) must produce the same parameter
// gradients as the plain differentiable loss computed from one ordinary forward pass, on a
// left-padded batch of sequences with different prompt and response lengths.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trainer/model/generate.h"
#include "trainer/model/model.h"
#include "trainer/objectives.h"
#include "trainer/scoring.h"

namespace distil::trainer {
namespace {

model::CausalLM tiny_model() {
  model::ModelConfig config;
  config.family = model::Family::qwen3;
  config.vocab_size = 40;
  config.hidden_size = 32;
  config.intermediate_size = 64;
  config.num_hidden_layers = 2;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.head_dim = 8;
  config.tie_word_embeddings = true;
  config.max_position_embeddings = 64;
  config.pad_token_id = 0;
  return model::make_random(config, 5);
}

struct Batch {
  TokenRows prompts = {{5, 6, 7, 8, 9, 10, 11}, {12, 13}, {14, 15, 16, 17}};
  TokenRows responses = {{20, 21, 22}, {23, 24, 25, 26, 27}, {28}};
};

// Log-probabilities [N,V] of every response position from one ordinary forward pass (with grad).
torch::Tensor reference_logp(model::CausalLM& model, const Batch& b) {
  auto packed = model::pack_sequences(b.prompts, b.responses, 0);
  auto logits = model->forward(packed.input_ids, packed.attention_mask);
  std::vector<torch::Tensor> rows;
  for (std::size_t i = 0; i < b.responses.size(); ++i)
    for (int64_t t = 0; t < packed.response_length[i]; ++t)
      rows.push_back(logits[i][packed.response_start[i] + t - 1]);
  return torch::stack(rows).log_softmax(-1);
}

std::vector<torch::Tensor> grads(model::CausalLM& model) {
  std::vector<torch::Tensor> out;
  for (auto& p : model->parameters()) {
    out.push_back(p.grad().defined() ? p.grad().detach().clone() : torch::zeros_like(p));
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
  return out;
}

StudentMicroBatch micro_batch(const Batch& b, const torch::Tensor& teacher_logp) {
  StudentMicroBatch m;
  m.prompts = b.prompts;
  m.responses = b.responses;
  std::vector<int64_t> sampled;
  int64_t t_max = 0;
  for (const auto& r : b.responses) {
    sampled.insert(sampled.end(), r.begin(), r.end());
    t_max = std::max<int64_t>(t_max, r.size());
  }
  m.targets.sampled = torch::tensor(sampled, torch::kLong);
  const int64_t n = static_cast<int64_t>(sampled.size()), v = teacher_logp.size(1);
  m.targets.teacher_ids = torch::arange(v, torch::kLong).unsqueeze(0).repeat({n, 1});
  m.targets.teacher_logp = teacher_logp;
  const int64_t rows = static_cast<int64_t>(b.responses.size());
  m.batch.mask = torch::zeros({rows, t_max});
  for (int64_t i = 0; i < rows; ++i) m.batch.mask[i].slice(0, 0, b.responses[i].size()).fill_(1.0);
  m.batch.group = torch::tensor(std::vector<int64_t>{0, 0, 1}, torch::kLong);
  m.batch.reward = torch::tensor(std::vector<float>{1.0f, 0.0f, 1.0f});
  m.batch.active = torch::ones({rows});
  m.batch.normalizer = static_cast<double>(n);
  return m;
}

void expect_same(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  double largest = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    largest = std::max(largest, b[i].abs().max().item<double>());
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-4, 1e-6))
        << "parameter " << i << ": max difference " << (a[i] - b[i]).abs().max().item<double>();
  }
  EXPECT_GT(largest, 1e-4) << "the reference gradient is zero: the test would not catch anything";
}

TEST(StudentPass, SftGradientEqualsThePlainNegativeLogLikelihoodGradient) {
  auto model = tiny_model();
  const Batch b;
  auto logp = reference_logp(model, b);
  std::vector<int64_t> sampled;
  for (const auto& r : b.responses) sampled.insert(sampled.end(), r.begin(), r.end());
  const auto target = torch::tensor(sampled, torch::kLong);
  (-logp.gather(1, target.unsqueeze(1)).sum() / static_cast<double>(sampled.size())).backward();
  const auto expected = grads(model);

  ObjectiveOptions options;
  options.name = "sft";
  const auto objective = make_objective(options);
  const auto teacher = torch::full({target.size(0), 40}, -std::log(40.0));
  student_backward(model, *objective, micro_batch(b, teacher), 0, /*chunk_tokens=*/3);
  expect_same(grads(model), expected);
}

TEST(StudentPass, CeGradientEqualsThePlainCrossEntropyToTheTeacher) {
  auto model = tiny_model();
  const Batch b;
  const int64_t n = 9;
  const auto teacher = torch::randn({n, 40}, torch::TensorOptions().dtype(torch::kFloat)).mul(3).log_softmax(-1);
  auto logp = reference_logp(model, b);
  (-(teacher.exp() * logp).sum() / static_cast<double>(n)).backward();
  const auto expected = grads(model);

  ObjectiveOptions options;
  options.name = "ce";
  options.lambda = 0.0;
  const auto objective = make_objective(options);
  student_backward(model, *objective, micro_batch(b, teacher), 0, /*chunk_tokens=*/4);
  expect_same(grads(model), expected);
}

}  // namespace
}  // namespace distil::trainer
