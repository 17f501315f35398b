// Sampling with a preallocated KV cache and chunked scoring.
#include "trainer/model/generate.h"

#include <algorithm>
#include <limits>
#include <map>

namespace distil::model {
namespace {

using torch::Tensor;

torch::Dtype compute_dtype_of(CausalLM& model) {
  return model->compute_dtype().value_or(model->lm_head_weight().scalar_type());
}

void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab, const char* what, size_t row) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab)
      throw std::invalid_argument(std::string(what) + " " + std::to_string(row) + " holds token id " + std::to_string(id) +
                                  " outside [0, " + std::to_string(vocab) + ")");
}

// A row's own stream of uniforms (splitmix64): with per-row seeds a row draws the same numbers
// whatever batch it is generated in, so N processes sample what one process would.
struct RowStream {
  uint64_t state;
  float next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 bits: exact in float, < 1
  }
};

// Draws one token per row from softmax(logits / temperature) restricted by top-k / top-p, by
// inverse-CDF sampling with the given uniforms ([b, 1], drawn on the CPU, so results do not
// depend on the device's generator). Returns (tokens [b], log-probs [b] under the restricted
// distribution).
std::pair<Tensor, Tensor> sample_rows(const Tensor& logits_in, const SamplingParams& p, const Tensor& uniforms_cpu) {
  const Tensor logits = logits_in.to(torch::kFloat32);
  const int64_t b = logits.size(0), V = logits.size(1);
  if (p.temperature <= 0) {
    return {logits.argmax(-1), torch::zeros({b}, logits.options())};
  }
  Tensor scaled = logits / p.temperature;
  Tensor candidates;  // [b, k] token ids, or undefined = the whole vocabulary in order
  const int64_t k = p.top_k > 0 ? std::min<int64_t>(p.top_k, V) : V;
  if (k < V || p.top_p < 1.0) {
    auto [values, indices] = k < V ? scaled.topk(k, -1, true, true) : scaled.sort(-1, true);
    scaled = values;
    candidates = indices;
  }
  Tensor probs = torch::softmax(scaled, -1);
  if (p.top_p < 1.0) {
    const Tensor before = probs.cumsum(-1) - probs;  // mass of strictly more likely tokens
    probs = probs.masked_fill(before >= p.top_p, 0.0);
    probs = probs / probs.sum(-1, true);
  }
  const Tensor uniforms = uniforms_cpu.to(probs.device());
  const Tensor cdf = probs.cumsum(-1);
  Tensor choice = torch::searchsorted(cdf, uniforms * cdf.narrow(-1, cdf.size(-1) - 1, 1)).clamp_max(cdf.size(-1) - 1);
  // Never land on a zero-probability entry (possible only through rounding at the boundary).
  const Tensor chosen_prob = probs.gather(-1, choice);
  choice = torch::where(chosen_prob > 0, choice, probs.argmax(-1, true));
  const Tensor logprob = probs.gather(-1, choice).log().squeeze(-1);
  const Tensor token = candidates.defined() ? candidates.gather(-1, choice).squeeze(-1) : choice.squeeze(-1);
  return {token, logprob};
}

// Gathered log-softmax over the vocabulary for a chunk of rows; backward recomputes the chunk's
// logits instead of storing them.
struct ChunkLogprobs : public torch::autograd::Function<ChunkLogprobs> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const Tensor& ids) {
    ctx->save_for_backward({hidden, weight, ids});
    const Tensor logits = torch::matmul(hidden, weight.to(hidden.scalar_type()).t()).to(torch::kFloat32);
    return logits.gather(-1, ids) - logits.logsumexp(-1, true);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &hidden = saved[0], &weight = saved[1], &ids = saved[2];
    const Tensor w = weight.to(hidden.scalar_type());
    const Tensor logits = torch::matmul(hidden, w.t()).to(torch::kFloat32);
    const Tensor probs = torch::softmax(logits, -1);
    const Tensor g = grads[0].to(torch::kFloat32);  // [n, K]
    // d out[n,k] / d logits[n,v] = [v == ids[n,k]] - p[n,v]
    Tensor grad_logits = torch::zeros_like(logits).scatter_add_(-1, ids, g) - probs * g.sum(-1, true);
    grad_logits = grad_logits.to(hidden.scalar_type());
    const Tensor grad_hidden = torch::matmul(grad_logits, w);
    const Tensor grad_weight = torch::matmul(grad_logits.t(), hidden).to(weight.scalar_type());
    return {grad_hidden, grad_weight, Tensor()};
  }
};

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::eos: return "eos";
    case FinishReason::stop_string: return "stop";
    case FinishReason::length: return "length";
  }
  return "length";
}

std::vector<GeneratedSequence> generate(CausalLM& model, const text::Tokenizer& tokenizer,
                                        const std::vector<std::vector<int32_t>>& prompts, const SamplingParams& params) {
  if (prompts.empty()) return {};
  if (params.max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  if (!(params.top_p > 0.0 && params.top_p <= 1.0)) throw std::invalid_argument("top_p must be in (0, 1]");
  if (params.top_k < 0) throw std::invalid_argument("top_k must be >= 0");
  if (!std::isfinite(params.temperature) || params.temperature < 0)
    throw std::invalid_argument("temperature must be a finite number >= 0");
  const auto& config = model->config();
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t P = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw std::invalid_argument("prompt " + std::to_string(i) + " is empty");
    check_token_ids(prompts[i], config.vocab_size, "prompt", i);
    P = std::max<int64_t>(P, static_cast<int64_t>(prompts[i].size()));
  }
  std::vector<GeneratedSequence> out(prompts.size());
  if (params.max_new_tokens == 0) return out;
  const std::vector<int32_t> eos = params.eos_ids.empty() ? tokenizer.eos_token_ids() : params.eos_ids;
  size_t longest_stop = 0;
  for (const auto& s : params.stop_strings) {
    if (s.empty()) throw std::invalid_argument("stop strings must not be empty");
    longest_stop = std::max(longest_stop, s.size());
  }

  torch::NoGradGuard no_grad;
  const auto device = model->lm_head_weight().device();
  const auto long_cpu = torch::TensorOptions().dtype(torch::kLong);
  Tensor ids = torch::zeros({B, P}, long_cpu), mask = torch::zeros({B, P}, long_cpu);
  for (int64_t i = 0; i < B; ++i) {
    const auto& p = prompts[i];
    const int64_t offset = P - static_cast<int64_t>(p.size());
    for (size_t t = 0; t < p.size(); ++t) ids[i][offset + static_cast<int64_t>(t)] = p[t];
    mask.narrow(0, i, 1).narrow(1, offset, static_cast<int64_t>(p.size())).fill_(1);
  }
  ids = ids.to(device);
  mask = mask.to(device);
  if (!params.row_seeds.empty() && params.row_seeds.size() != prompts.size())
    throw std::invalid_argument("row_seeds: " + std::to_string(params.row_seeds.size()) + " seeds for " +
                                std::to_string(prompts.size()) + " prompts");
  auto generator = at::detail::createCPUGenerator(params.seed);
  std::vector<RowStream> streams;
  for (uint64_t seed : params.row_seeds) streams.push_back({seed});

  // Distinct prompts: row i's prompt is distinct[source[i]]. G samples of a prompt share one prefill.
  std::vector<int64_t> source(B), distinct;
  {
    std::map<std::vector<int32_t>, int64_t> first_row;
    for (int64_t i = 0; i < B; ++i) {
      const auto [it, added] = first_row.emplace(prompts[i], static_cast<int64_t>(distinct.size()));
      if (added) distinct.push_back(i);
      source[i] = it->second;
    }
  }
  const bool share = params.use_kv_cache && params.share_prompt_prefill && static_cast<int64_t>(distinct.size()) < B;

  std::optional<KVCache> cache;
  Tensor hidden, next_logits;
  if (share) {
    // Prefill the distinct prompts (same padding to P as in the full batch), then copy each one's
    // cache rows and last logits to all of its rows.
    const Tensor firsts = torch::tensor(distinct, long_cpu).to(device);
    cache = KVCache::allocate(config, static_cast<int64_t>(distinct.size()), P + params.max_new_tokens, device,
                              compute_dtype_of(model));
    hidden = model->hidden_states(ids.index_select(0, firsts), mask.index_select(0, firsts), &*cache);
    const Tensor expand = torch::tensor(source, long_cpu).to(device);
    cache->select_rows(expand);
    next_logits = model->logits(hidden.select(1, hidden.size(1) - 1)).index_select(0, expand);
  } else {
    if (params.use_kv_cache)
      cache = KVCache::allocate(config, B, P + params.max_new_tokens, device, compute_dtype_of(model));
    hidden = model->hidden_states(ids, mask, cache ? &*cache : nullptr);
    next_logits = model->logits(hidden.select(1, hidden.size(1) - 1));
  }

  // Batch row -> original prompt index; finished rows stay in the batch (their samples ignored)
  // until a quarter of it has finished, since dropping rows copies the whole KV cache.
  std::vector<int64_t> rows(B);
  std::vector<uint8_t> finished(B, 0);
  for (int64_t i = 0; i < B; ++i) rows[i] = i;
  std::vector<std::string> response_bytes(B);
  for (int64_t step = 0; step < params.max_new_tokens; ++step) {
    Tensor uniforms;
    if (params.temperature > 0) {
      if (streams.empty()) {
        uniforms = torch::rand({static_cast<int64_t>(rows.size()), 1}, generator,
                               torch::TensorOptions().dtype(torch::kFloat32));
      } else {
        uniforms = torch::empty({static_cast<int64_t>(rows.size()), 1}, torch::kFloat32);
        float* u = uniforms.data_ptr<float>();
        for (size_t r = 0; r < rows.size(); ++r) u[r] = streams[rows[r]].next();
      }
    }
    auto [tokens, logprobs] = sample_rows(next_logits, params, uniforms);
    const Tensor tokens_cpu = tokens.to(torch::kCPU, torch::kLong).contiguous();
    const Tensor logprobs_cpu = logprobs.to(torch::kCPU, torch::kFloat32).contiguous();
    const int64_t* tok = tokens_cpu.data_ptr<int64_t>();
    const float* lp = logprobs_cpu.data_ptr<float>();
    size_t still_running = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      if (finished[r]) continue;
      auto& seq = out[rows[r]];
      const auto token = static_cast<int32_t>(tok[r]);
      seq.tokens.push_back(token);
      seq.logprobs.push_back(lp[r]);
      if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
        seq.finish_reason = FinishReason::eos;
        finished[r] = 1;
        continue;
      }
      if (longest_stop > 0) {
        auto& bytes = response_bytes[rows[r]];
        const size_t before = bytes.size();
        bytes += tokenizer.token_bytes(token);
        const size_t from = before > longest_stop ? before - longest_stop + 1 : 0;
        bool stopped = false;
        for (const auto& s : params.stop_strings) stopped = stopped || bytes.find(s, from) != std::string::npos;
        if (stopped) {
          seq.finish_reason = FinishReason::stop_string;
          finished[r] = 1;
          continue;
        }
      }
      ++still_running;
    }
    if (still_running == 0 || step + 1 == params.max_new_tokens) break;
    Tensor next_tokens = tokens.to(device, torch::kLong);
    if (rows.size() - still_running >= std::max<size_t>(1, rows.size() / 4)) {
      std::vector<int64_t> keep, kept_rows;
      for (size_t r = 0; r < rows.size(); ++r)
        if (!finished[r]) keep.push_back(static_cast<int64_t>(r)), kept_rows.push_back(rows[r]);
      const Tensor index = torch::tensor(keep, long_cpu).to(device);
      next_tokens = next_tokens.index_select(0, index);
      if (cache) cache->select_rows(index);
      ids = ids.index_select(0, index);
      mask = mask.index_select(0, index);
      rows = std::move(kept_rows);
      finished.assign(rows.size(), 0);
    }
    const Tensor step_ids = next_tokens.view({-1, 1});
    const Tensor step_mask = torch::ones_like(step_ids);
    if (cache) {
      hidden = model->hidden_states(step_ids, step_mask, &*cache);
      next_logits = model->logits(hidden.select(1, 0));
    } else {
      ids = torch::cat({ids, step_ids}, 1);
      mask = torch::cat({mask, step_mask}, 1);
      hidden = model->hidden_states(ids, mask);
      next_logits = model->logits(hidden.select(1, hidden.size(1) - 1));
    }
  }
  for (auto& seq : out) {
    std::span<const int32_t> visible(seq.tokens);
    if (seq.finish_reason == FinishReason::eos) visible = visible.first(visible.size() - 1);
    seq.text = tokenizer.decode(visible);
    if (seq.finish_reason == FinishReason::stop_string) {
      size_t cut = std::string::npos;
      for (const auto& s : params.stop_strings) cut = std::min(cut, seq.text.find(s));
      if (cut != std::string::npos) seq.text.resize(cut);
    }
  }
  return out;
}

PackedBatch pack_sequences(const std::vector<std::vector<int32_t>>& prompts,
                           const std::vector<std::vector<int32_t>>& responses, int32_t pad_id, torch::Device device) {
  if (prompts.size() != responses.size())
    throw std::invalid_argument("pack_sequences: " + std::to_string(prompts.size()) + " prompts but " +
                                std::to_string(responses.size()) + " responses");
  if (prompts.empty()) throw std::invalid_argument("pack_sequences: empty batch");
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t T = 1;
  for (int64_t i = 0; i < B; ++i) T = std::max<int64_t>(T, prompts[i].size() + responses[i].size());
  std::vector<int64_t> ids(B * T, pad_id), mask(B * T, 0);
  PackedBatch batch;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t n = static_cast<int64_t>(prompts[i].size() + responses[i].size());
    int64_t col = T - n;
    for (int32_t t : prompts[i]) ids[i * T + col] = t, mask[i * T + col] = 1, ++col;
    batch.response_start.push_back(col);
    for (int32_t t : responses[i]) ids[i * T + col] = t, mask[i * T + col] = 1, ++col;
    batch.response_length.push_back(static_cast<int64_t>(responses[i].size()));
  }
  batch.input_ids = torch::tensor(ids, torch::kLong).view({B, T}).to(device);
  batch.attention_mask = torch::tensor(mask, torch::kLong).view({B, T}).to(device);
  return batch;
}

std::vector<ScoredSequence> score(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                  const std::vector<std::vector<int32_t>>& responses, int64_t top_k,
                                  int64_t chunk_tokens, int32_t pad_id) {
  const auto& config = model->config();
  if (top_k < 0 || top_k > config.vocab_size) throw std::invalid_argument("top_k must be in [0, vocab_size]");
  if (chunk_tokens <= 0) throw std::invalid_argument("chunk_tokens must be positive");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw std::invalid_argument("prompt " + std::to_string(i) + " is empty");
    check_token_ids(prompts[i], config.vocab_size, "prompt", i);
    if (i < responses.size()) check_token_ids(responses[i], config.vocab_size, "response", i);
  }
  torch::NoGradGuard no_grad;
  const auto device = model->lm_head_weight().device();
  const PackedBatch batch = pack_sequences(prompts, responses, pad_id, device);
  const int64_t B = batch.input_ids.size(0), T = batch.input_ids.size(1);
  const Tensor hidden = model->hidden_states(batch.input_ids, batch.attention_mask).reshape({B * T, -1});
  // Row-major positions (in the flattened [B*T] hidden) that predict each response token.
  std::vector<int64_t> positions, targets;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < batch.response_length[i]; ++t) {
      positions.push_back(i * T + batch.response_start[i] + t - 1);
      targets.push_back(responses[i][t]);
    }
  std::vector<ScoredSequence> out(B);
  for (int64_t i = 0; i < B; ++i) {
    out[i].k = top_k;
    out[i].token_logprobs.reserve(batch.response_length[i]);
    out[i].topk_ids.reserve(batch.response_length[i] * top_k);
    out[i].topk_logprobs.reserve(batch.response_length[i] * top_k);
  }
  const int64_t N = static_cast<int64_t>(positions.size());
  int64_t row = 0, filled = 0;  // which sequence the next result belongs to
  for (int64_t begin = 0; begin < N; begin += chunk_tokens) {
    const int64_t n = std::min(chunk_tokens, N - begin);
    const Tensor index = torch::tensor(std::vector<int64_t>(positions.begin() + begin, positions.begin() + begin + n),
                                       torch::kLong).to(device);
    const Tensor target = torch::tensor(std::vector<int64_t>(targets.begin() + begin, targets.begin() + begin + n),
                                        torch::kLong).to(device);
    const Tensor logits = model->logits(hidden.index_select(0, index)).to(torch::kFloat32);
    const Tensor log_z = logits.logsumexp(-1, true);
    const Tensor token_lp = (logits.gather(-1, target.view({-1, 1})) - log_z).squeeze(-1).cpu().contiguous();
    Tensor top_lp, top_ids;
    if (top_k > 0) {
      auto [values, indices] = logits.topk(top_k, -1, true, true);
      top_lp = (values - log_z).cpu().contiguous();
      top_ids = indices.to(torch::kInt32).cpu().contiguous();
    }
    for (int64_t j = 0; j < n; ++j) {
      while (filled == batch.response_length[row]) ++row, filled = 0;
      auto& seq = out[row];
      seq.token_logprobs.push_back(token_lp.data_ptr<float>()[j]);
      if (top_k > 0) {
        const int32_t* ids = top_ids.data_ptr<int32_t>() + j * top_k;
        const float* lps = top_lp.data_ptr<float>() + j * top_k;
        seq.topk_ids.insert(seq.topk_ids.end(), ids, ids + top_k);
        seq.topk_logprobs.insert(seq.topk_logprobs.end(), lps, lps + top_k);
      }
      ++filled;
    }
  }
  return out;
}

torch::Tensor chunked_gather_logprobs(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& gather_ids,
                                      int64_t chunk_tokens) {
  if (hidden.dim() != 2 || gather_ids.dim() != 2 || hidden.size(0) != gather_ids.size(0))
    throw std::invalid_argument("chunked_gather_logprobs needs hidden [N, H] and gather_ids [N, K]");
  if (chunk_tokens <= 0) throw std::invalid_argument("chunk_tokens must be positive");
  const Tensor weight = model->lm_head_weight();
  const Tensor ids = gather_ids.to(hidden.device(), torch::kLong);
  std::vector<Tensor> parts;
  for (int64_t begin = 0; begin < hidden.size(0); begin += chunk_tokens) {
    const int64_t n = std::min(chunk_tokens, hidden.size(0) - begin);
    parts.push_back(ChunkLogprobs::apply(hidden.narrow(0, begin, n), weight, ids.narrow(0, begin, n)));
  }
  if (parts.empty()) return torch::zeros({0, gather_ids.size(1)}, hidden.options().dtype(torch::kFloat32));
  return torch::cat(parts, 0);
}

}  // namespace distil::model
