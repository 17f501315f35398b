// Sampling with a preallocated KV cache and chunked scoring.
#include "trainer/model/generate.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <span>

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
uint64_t mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
struct RowStream {
  uint64_t state;
  float next() {
    const uint64_t z = mix64(state += 0x9e3779b97f4a7c15ULL);
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

namespace {

// The running batch of generate(): B prompts flow through at most `slots` batch rows. Each row of
// the batch (a slot) holds one sequence; the KV cache keeps every slot's real tokens contiguous
// and right-aligned at cache.length (left padding), so column distance is position distance (the
// sliding-window layers rely on that). With fewer slots than prompts, a slot whose sequence
// finished takes the next waiting prompt in the same step (continuous batching): the prompt is
// prefilled on its own (prompts alike share one prefill) and its cache rows written into the slot.
class RunningBatch {
 public:
  RunningBatch(CausalLM& model, const text::Tokenizer& tokenizer, const std::vector<std::vector<int32_t>>& prompts,
               const SamplingParams& params, int64_t slots, GenerateStats* stats)
      : model_(model), tokenizer_(tokenizer), prompts_(prompts), params_(params), slots_(slots), stats_(stats),
        device_(model->lm_head_weight().device()), generator_(at::detail::createCPUGenerator(params.seed)),
        out_(prompts.size()), response_bytes_(prompts.size()) {
    eos_ = params.eos_ids.empty() ? tokenizer.eos_token_ids() : params.eos_ids;
    for (const auto& s : params.stop_strings) longest_stop_ = std::max(longest_stop_, s.size());
    for (const auto& p : prompts) longest_prompt_ = std::max<int64_t>(longest_prompt_, static_cast<int64_t>(p.size()));
    for (size_t i = 0; i < prompts.size(); ++i) waiting_.push_back(static_cast<int64_t>(i));
    continuous_ = slots < static_cast<int64_t>(prompts.size());
    // Room for the longest prompt and response; with continuous batching, max_new_tokens columns
    // more, so that compacting (one copy of the cache) is needed at most every max_new_tokens steps.
    capacity_ = longest_prompt_ + params.max_new_tokens * (continuous_ ? 2 : 1);
    if (!params.row_seeds.empty()) {
      for (uint64_t seed : params.row_seeds) streams_.push_back({seed});
    } else if (continuous_) {
      // Which rows share a step depends on the slot count, so one batch stream would make each
      // sample depend on it; a stream per row keeps the output the same for any slot count.
      for (size_t i = 0; i < prompts.size(); ++i) streams_.push_back({mix64(params.seed ^ mix64(i + 1))});
    }
  }

  std::vector<GeneratedSequence> run() {
    admit();
    for (;;) {
      sample_and_record();
      size_t live = 0;
      for (const auto& slot : slot_) live += slot.live ? 1 : 0;
      if (live == 0 && waiting_.empty()) break;
      if (waiting_.empty()) drop_finished_if_worth_it(live);
      if (live > 0) decode_step();
      admit();
    }
    finish_texts();
    return std::move(out_);
  }

 private:
  struct Slot {
    int64_t row = -1;  // prompt index; kept after the sequence finished until the slot is reused or dropped
    bool live = false;
  };

  // Fills free slots (all of them at the start) with waiting prompts.
  void admit() {
    std::vector<int64_t> free_slots;
    if (slot_.empty()) {
      for (int64_t s = 0; s < slots_; ++s) free_slots.push_back(s);
    } else {
      for (size_t s = 0; s < slot_.size(); ++s)
        if (!slot_[s].live) free_slots.push_back(static_cast<int64_t>(s));
    }
    if (free_slots.empty() || waiting_.empty()) return;
    std::vector<int64_t> rows;
    while (rows.size() < free_slots.size() && !waiting_.empty()) rows.push_back(waiting_.front()), waiting_.pop_front();
    free_slots.resize(rows.size());

    // The newcomers' distinct prompts, left-padded to the longest of them.
    std::vector<int64_t> source(rows.size()), distinct;
    {
      const bool share = params_.share_prompt_prefill && params_.use_kv_cache;
      std::map<std::vector<int32_t>, int64_t> first;
      for (size_t i = 0; i < rows.size(); ++i) {
        if (share) {
          const auto [it, added] = first.emplace(prompts_[rows[i]], static_cast<int64_t>(distinct.size()));
          if (!added) {
            source[i] = it->second;
            continue;
          }
        }
        source[i] = static_cast<int64_t>(distinct.size());
        distinct.push_back(rows[i]);
      }
    }
    int64_t P = 0;
    for (int64_t r : distinct) P = std::max<int64_t>(P, static_cast<int64_t>(prompts_[r].size()));
    const auto long_cpu = torch::TensorOptions().dtype(torch::kLong);
    const int64_t D = static_cast<int64_t>(distinct.size());
    std::vector<int64_t> id_values(D * P, 0), mask_values(D * P, 0);
    for (int64_t i = 0; i < D; ++i) {
      const auto& p = prompts_[distinct[i]];
      const int64_t offset = i * P + P - static_cast<int64_t>(p.size());
      for (size_t t = 0; t < p.size(); ++t) id_values[offset + t] = p[t], mask_values[offset + t] = 1;
    }
    const Tensor ids = torch::tensor(id_values, long_cpu).view({D, P}).to(device_);
    const Tensor mask = torch::tensor(mask_values, long_cpu).view({D, P}).to(device_);
    const bool first_fill = slot_.empty();
    const bool copies = D < static_cast<int64_t>(rows.size());
    const Tensor expand = torch::tensor(source, long_cpu).to(device_);
    if (stats_) stats_->prefilled_rows += D, stats_->admissions += first_fill ? 0 : static_cast<int64_t>(rows.size());

    Tensor logits;
    if (!params_.use_kv_cache) {
      // Reference path (no cache, every row in one batch): the running batch is ids/mask itself.
      ids_ = ids, mask_ = mask;
      const Tensor hidden = model_->hidden_states(ids_, mask_);
      logits = model_->logits(hidden.select(1, hidden.size(1) - 1));
    } else if (first_fill) {
      // The first slots: prefill straight into the batch's cache, then copy shared rows out.
      cache_ = KVCache::allocate(model_->config(), D, capacity_, device_, compute_dtype_of(model_));
      const Tensor hidden = model_->hidden_states(ids, mask, &*cache_);
      logits = model_->logits(hidden.select(1, hidden.size(1) - 1));
      if (copies) cache_->select_rows(expand);
    } else {
      KVCache fresh = KVCache::allocate(model_->config(), D, P, device_, compute_dtype_of(model_));
      const Tensor hidden = model_->hidden_states(ids, mask, &fresh);
      logits = model_->logits(hidden.select(1, hidden.size(1) - 1));
      if (cache_->length < P) shift_right(P - cache_->length);
      write_rows(fresh, expand, torch::tensor(free_slots, long_cpu).to(device_));
    }
    if (copies) logits = logits.index_select(0, expand);
    if (first_fill) {
      next_logits_ = logits;
      slot_.resize(rows.size());
    } else {
      next_logits_.index_copy_(0, torch::tensor(free_slots, long_cpu).to(device_), logits.to(next_logits_.scalar_type()));
    }
    for (size_t i = 0; i < rows.size(); ++i) slot_[free_slots[i]] = {rows[i], true};
  }

  // Draws one token for every slot and records it for the live ones (eos, stop strings, length).
  void sample_and_record() {
    const int64_t n = static_cast<int64_t>(slot_.size());
    Tensor uniforms;
    if (params_.temperature > 0) {
      if (streams_.empty()) {
        uniforms = torch::rand({n, 1}, generator_, torch::TensorOptions().dtype(torch::kFloat32));
      } else {
        uniforms = torch::empty({n, 1}, torch::kFloat32);
        float* u = uniforms.data_ptr<float>();
        for (int64_t s = 0; s < n; ++s) u[s] = slot_[s].live ? streams_[slot_[s].row].next() : 0.5f;
      }
    }
    auto [tokens, logprobs] = sample_rows(next_logits_, params_, uniforms);
    tokens_ = tokens.to(torch::kCPU, torch::kLong).contiguous();
    const Tensor logprobs_cpu = logprobs.to(torch::kCPU, torch::kFloat32).contiguous();
    const int64_t* tok = tokens_.data_ptr<int64_t>();
    const float* lp = logprobs_cpu.data_ptr<float>();
    for (int64_t s = 0; s < n; ++s) {
      if (!slot_[s].live) continue;
      const int64_t row = slot_[s].row;
      auto& seq = out_[row];
      const auto token = static_cast<int32_t>(tok[s]);
      seq.tokens.push_back(token);
      seq.logprobs.push_back(lp[s]);
      if (std::find(eos_.begin(), eos_.end(), token) != eos_.end()) {
        seq.finish_reason = FinishReason::eos;
        slot_[s].live = false;
        continue;
      }
      if (longest_stop_ > 0) {
        auto& bytes = response_bytes_[row];
        const size_t before = bytes.size();
        bytes += tokenizer_.token_bytes(token);
        const size_t from = before > longest_stop_ ? before - longest_stop_ + 1 : 0;
        bool stopped = false;
        for (const auto& stop : params_.stop_strings) stopped = stopped || bytes.find(stop, from) != std::string::npos;
        if (stopped) {
          seq.finish_reason = FinishReason::stop_string;
          slot_[s].live = false;
          continue;
        }
      }
      if (static_cast<int64_t>(seq.tokens.size()) == params_.max_new_tokens) slot_[s].live = false;  // length
    }
  }

  // With no prompt waiting, finished rows stay in the batch (their samples ignored) until a
  // quarter of it has finished, since dropping rows copies the whole KV cache.
  void drop_finished_if_worth_it(size_t live) {
    const size_t n = slot_.size();
    if (n - live < std::max<size_t>(1, n / 4) || live == 0) return;
    std::vector<int64_t> keep;
    std::vector<Slot> kept;
    for (size_t s = 0; s < n; ++s)
      if (slot_[s].live) keep.push_back(static_cast<int64_t>(s)), kept.push_back(slot_[s]);
    const Tensor index = torch::tensor(keep, torch::TensorOptions().dtype(torch::kLong));
    tokens_ = tokens_.index_select(0, index);
    const Tensor on_device = index.to(device_);
    if (cache_) cache_->select_rows(on_device);
    if (ids_.defined()) ids_ = ids_.index_select(0, on_device), mask_ = mask_.index_select(0, on_device);
    slot_ = std::move(kept);
  }

  // Feeds each live slot its new token (free slots a masked placeholder) and computes the next logits.
  void decode_step() {
    const int64_t n = static_cast<int64_t>(slot_.size());
    std::vector<int64_t> live(n);
    bool all_live = true;
    for (int64_t s = 0; s < n; ++s) live[s] = slot_[s].live ? 1 : 0, all_live = all_live && slot_[s].live;
    Tensor step_mask = torch::tensor(live, torch::TensorOptions().dtype(torch::kLong)).view({n, 1});
    const Tensor step_ids = (all_live ? tokens_.view({n, 1}) : tokens_.view({n, 1}) * step_mask).to(device_);
    step_mask = step_mask.to(device_);
    if (stats_) ++stats_->decode_steps, stats_->decoded_slot_tokens += n;
    if (cache_) {
      if (cache_->length + 1 > cache_->capacity) compact();
      const Tensor hidden = model_->hidden_states(step_ids, step_mask, &*cache_);
      next_logits_ = model_->logits(hidden.select(1, 0));
    } else {
      ids_ = torch::cat({ids_, step_ids}, 1);
      mask_ = torch::cat({mask_, step_mask}, 1);
      const Tensor hidden = model_->hidden_states(ids_, mask_);
      next_logits_ = model_->logits(hidden.select(1, hidden.size(1) - 1));
    }
  }

  // Keeps only the last columns that a live sequence still uses (its prompt and the tokens fed so
  // far), moved to the front of the cache.
  void compact() {
    int64_t keep = 1;
    for (const auto& slot : slot_)
      if (slot.live)
        keep = std::max<int64_t>(keep, static_cast<int64_t>(prompts_[slot.row].size() + out_[slot.row].tokens.size()) - 1);
    auto& c = *cache_;
    const int64_t from = c.length - keep;
    if (from <= 0) throw std::logic_error("generate: KV cache full of live positions");
    for (auto* list : {&c.keys, &c.values})
      for (auto& t : *list) t.narrow(2, 0, keep).copy_(t.narrow(2, from, keep).clone());
    c.attention_mask.narrow(1, 0, keep).copy_(c.attention_mask.narrow(1, from, keep).clone());
    c.attention_mask.narrow(1, keep, c.capacity - keep).zero_();
    c.length = keep;
    if (stats_) ++stats_->compactions;
  }

  // Moves every row's positions `by` columns to the right (a newcomer's prompt is longer than the
  // batch's filled length), keeping each row right-aligned.
  void shift_right(int64_t by) {
    auto& c = *cache_;
    if (c.length + by > c.capacity) throw std::logic_error("generate: KV cache too small for a prompt");
    for (auto* list : {&c.keys, &c.values})
      for (auto& t : *list) t.narrow(2, by, c.length).copy_(t.narrow(2, 0, c.length).clone());
    c.attention_mask.narrow(1, by, c.length).copy_(c.attention_mask.narrow(1, 0, c.length).clone());
    c.attention_mask.narrow(1, 0, by).zero_();
    c.length += by;
  }

  // Writes rows `source_rows` of `fresh` (a prefill of the newcomers, fresh.length columns) into
  // the batch's slots `slots`, right-aligned at the batch's length.
  void write_rows(const KVCache& fresh, const Tensor& source_rows, const Tensor& slots) {
    auto& c = *cache_;
    const int64_t width = fresh.length, at = c.length - width;
    for (size_t l = 0; l < c.keys.size(); ++l) {
      c.keys[l].narrow(2, at, width).index_copy_(0, slots, fresh.keys[l].narrow(2, 0, width).index_select(0, source_rows));
      c.values[l].narrow(2, at, width).index_copy_(0, slots, fresh.values[l].narrow(2, 0, width).index_select(0, source_rows));
    }
    c.attention_mask.index_fill_(0, slots, 0);
    c.attention_mask.narrow(1, at, width).index_copy_(0, slots, fresh.attention_mask.narrow(1, 0, width).index_select(0, source_rows));
    c.next_position.index_copy_(0, slots, fresh.next_position.index_select(0, source_rows));
  }

  void finish_texts() {
    for (auto& seq : out_) {
      std::span<const int32_t> visible(seq.tokens);
      if (seq.finish_reason == FinishReason::eos) visible = visible.first(visible.size() - 1);
      seq.text = tokenizer_.decode(visible);
      if (seq.finish_reason == FinishReason::stop_string) {
        size_t cut = std::string::npos;
        for (const auto& s : params_.stop_strings) cut = std::min(cut, seq.text.find(s));
        if (cut != std::string::npos) seq.text.resize(cut);
      }
    }
  }

  CausalLM& model_;
  const text::Tokenizer& tokenizer_;
  const std::vector<std::vector<int32_t>>& prompts_;
  const SamplingParams& params_;
  const int64_t slots_;
  GenerateStats* stats_;
  const torch::Device device_;
  at::Generator generator_;
  std::vector<GeneratedSequence> out_;
  std::vector<std::string> response_bytes_;
  std::vector<int32_t> eos_;
  size_t longest_stop_ = 0;
  int64_t longest_prompt_ = 0, capacity_ = 0;
  bool continuous_ = false;
  std::vector<RowStream> streams_;
  std::deque<int64_t> waiting_;
  std::vector<Slot> slot_;
  std::optional<KVCache> cache_;
  Tensor ids_, mask_;  // the running batch without a cache
  Tensor next_logits_, tokens_;
};

}  // namespace

std::vector<GeneratedSequence> generate(CausalLM& model, const text::Tokenizer& tokenizer,
                                        const std::vector<std::vector<int32_t>>& prompts, const SamplingParams& params,
                                        GenerateStats* stats) {
  if (prompts.empty()) return {};
  if (params.max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  if (!(params.top_p > 0.0 && params.top_p <= 1.0)) throw std::invalid_argument("top_p must be in (0, 1]");
  if (params.top_k < 0) throw std::invalid_argument("top_k must be >= 0");
  if (!std::isfinite(params.temperature) || params.temperature < 0)
    throw std::invalid_argument("temperature must be a finite number >= 0");
  if (params.max_batch_rows < 0) throw std::invalid_argument("max_batch_rows must be >= 0 (0 = every row at once)");
  const auto& config = model->config();
  const int64_t B = static_cast<int64_t>(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw std::invalid_argument("prompt " + std::to_string(i) + " is empty");
    check_token_ids(prompts[i], config.vocab_size, "prompt", i);
  }
  for (const auto& s : params.stop_strings)
    if (s.empty()) throw std::invalid_argument("stop strings must not be empty");
  if (!params.row_seeds.empty() && params.row_seeds.size() != prompts.size())
    throw std::invalid_argument("row_seeds: " + std::to_string(params.row_seeds.size()) + " seeds for " +
                                std::to_string(prompts.size()) + " prompts");
  const int64_t slots = params.max_batch_rows > 0 ? std::min(params.max_batch_rows, B) : B;
  if (slots < B && !params.use_kv_cache)
    throw std::invalid_argument("max_batch_rows (continuous batching) needs use_kv_cache");
  if (params.max_new_tokens == 0) return std::vector<GeneratedSequence>(prompts.size());
  torch::NoGradGuard no_grad;
  return RunningBatch(model, tokenizer, prompts, params, slots, stats).run();
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
