// The decoder families against a straightforward reference written here (reading the saved HF
// directory by tensor name), plus KV-cache, padding, sampling, scoring and checkpoint tests.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include <torch/version.h>

#include "tests/model/run_command.h"
#include "trainer/model/generate.h"
#include "trainer/model/model.h"
#include "trainer/text/safetensors.h"
#include "trainer/text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using distil::model::CausalLM;
using distil::model::Family;
using distil::model::ModelConfig;
using torch::Tensor;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(DISTIL_BINARY_DIR) / "test-tmp" / "model" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ModelConfig tiny_config(const std::string& variant) {
  ModelConfig c;
  c.vocab_size = 300;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = 256;
  if (variant == "qwen3") {
    c.family = Family::qwen3;
    c.head_dim = 24;  // Qwen3 decouples head_dim from hidden/heads
    c.rope_theta = 1e6;
    c.tie_word_embeddings = true;
  } else if (variant == "llama3") {
    c.family = Family::llama;
    c.rope_theta = 500000.0;
    c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 16};
    c.rms_norm_eps = 1e-5;
  } else if (variant == "olmo2") {
    c.family = Family::olmo;
    c.rms_norm_eps = 1e-6;
  } else if (variant == "olmo3") {
    c.family = Family::olmo;
    c.sliding_window = 4;
    c.sliding_layers = {true, false};
  } else {
    ADD_FAILURE() << "unknown variant " << variant;
  }
  return c;
}

// make_random's std 0.02 gives near-uniform attention; larger weights and non-unit norms make the
// comparison sensitive to masks, RoPE and norm placement.
CausalLM spicy_model(const ModelConfig& c, uint64_t seed) {
  CausalLM model = distil::model::make_random(c, seed);
  auto gen = at::detail::createCPUGenerator(seed + 1);
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : model->hf_state_dict()) {
    if (name.find("norm") != std::string::npos) {
      t.copy_(1.0 + 0.2 * torch::randn(t.sizes(), gen));
    } else {
      t.copy_(0.15 * torch::randn(t.sizes(), gen));
    }
  }
  return model;
}

// ---------------------------------------------------------------- reference implementation

Tensor load(const distil::text::SafetensorsCheckpoint& ckpt, const std::string& name) {
  const auto& v = ckpt.tensor(name);
  EXPECT_EQ(v.dtype, distil::text::DType::F32) << name;
  return torch::from_blob(const_cast<std::byte*>(v.data.data()), v.shape, torch::kFloat32).clone();
}

Tensor ref_rms(const Tensor& x, const Tensor& w, double eps) {
  return w * (x / torch::sqrt(x.pow(2).mean(-1, true) + eps));
}

// Logits [T, V] of one unpadded sequence, from the HF directory alone.
Tensor reference_logits(const fs::path& dir, const std::vector<int64_t>& ids) {
  std::ifstream in(dir / "config.json");
  const auto cfg = nlohmann::json::parse(in);
  const auto ckpt = distil::text::SafetensorsCheckpoint::open(dir);
  const std::string type = cfg["model_type"];
  const bool olmo = type == "olmo2" || type == "olmo3", qwen = type == "qwen3";
  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t nH = cfg["num_attention_heads"], nKV = cfg["num_key_value_heads"], D = cfg["head_dim"];
  const double eps = cfg["rms_norm_eps"], theta = cfg["rope_theta"];
  // RoPE frequencies, with Llama 3 scaling written out per frequency.
  std::vector<double> inv_freq(D / 2);
  for (int64_t i = 0; i < D / 2; ++i) {
    double f = 1.0 / std::pow(theta, 2.0 * i / D);
    if (!cfg["rope_scaling"].is_null() && cfg["rope_scaling"]["rope_type"] == "llama3") {
      const auto& s = cfg["rope_scaling"];
      const double factor = s["factor"], low = s["low_freq_factor"], high = s["high_freq_factor"];
      const double old_len = s["original_max_position_embeddings"];
      const double wavelen = 2 * M_PI / f;
      if (wavelen < old_len / high) {
        // high frequency: unchanged
      } else if (wavelen > old_len / low) {
        f = f / factor;
      } else {
        const double smooth = (old_len / wavelen - low) / (high - low);
        f = (1 - smooth) * f / factor + smooth * f;
      }
    }
    inv_freq[i] = f;
  }
  const auto rope = [&](Tensor x) {  // x [T, heads, D]
    Tensor out = x.clone();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < D / 2; ++i) {
        const double a = t * inv_freq[i];
        const Tensor x1 = x.select(0, t).select(-1, i), x2 = x.select(0, t).select(-1, i + D / 2);
        out.select(0, t).select(-1, i).copy_(x1 * std::cos(a) - x2 * std::sin(a));
        out.select(0, t).select(-1, i + D / 2).copy_(x2 * std::cos(a) + x1 * std::sin(a));
      }
    return out;
  };
  Tensor x = load(ckpt, "model.embed_tokens.weight").index_select(0, torch::tensor(ids));
  const int64_t layers = cfg["num_hidden_layers"];
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const auto W = [&](const std::string& n) { return load(ckpt, p + n); };
    const Tensor h = olmo ? x : ref_rms(x, W("input_layernorm.weight"), eps);
    Tensor q = h.matmul(W("self_attn.q_proj.weight").t()), k = h.matmul(W("self_attn.k_proj.weight").t()),
           v = h.matmul(W("self_attn.v_proj.weight").t());
    if (olmo) {
      q = ref_rms(q, W("self_attn.q_norm.weight"), eps);
      k = ref_rms(k, W("self_attn.k_norm.weight"), eps);
    }
    q = q.view({T, nH, D});
    k = k.view({T, nKV, D});
    v = v.view({T, nKV, D});
    if (qwen) {
      q = ref_rms(q, W("self_attn.q_norm.weight"), eps);
      k = ref_rms(k, W("self_attn.k_norm.weight"), eps);
    }
    q = rope(q);
    k = rope(k);
    int64_t window = 0;
    if (cfg.contains("layer_types") && cfg["layer_types"][l] == "sliding_attention") window = cfg["sliding_window"];
    std::vector<Tensor> heads;
    for (int64_t hd = 0; hd < nH; ++hd) {
      const int64_t kv = hd / (nH / nKV);
      Tensor scores = q.select(1, hd).matmul(k.select(1, kv).t()) / std::sqrt(static_cast<double>(D));
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j)
          if (j > i || (window > 0 && j <= i - window)) scores[i][j] = -INFINITY;
      heads.push_back(torch::softmax(scores, -1).matmul(v.select(1, kv)));
    }
    const Tensor attn = torch::cat(heads, -1).matmul(W("self_attn.o_proj.weight").t());
    const auto mlp = [&](const Tensor& y) {
      return (torch::silu(y.matmul(W("mlp.gate_proj.weight").t())) * y.matmul(W("mlp.up_proj.weight").t()))
          .matmul(W("mlp.down_proj.weight").t());
    };
    if (olmo) {
      x = x + ref_rms(attn, W("post_attention_layernorm.weight"), eps);
      x = x + ref_rms(mlp(x), W("post_feedforward_layernorm.weight"), eps);
    } else {
      x = x + attn;
      x = x + mlp(ref_rms(x, W("post_attention_layernorm.weight"), eps));
    }
  }
  x = ref_rms(x, load(ckpt, "model.norm.weight"), eps);
  const Tensor head = cfg["tie_word_embeddings"].get<bool>() ? load(ckpt, "model.embed_tokens.weight")
                                                             : load(ckpt, "lm_head.weight");
  return x.matmul(head.t());
}

void expect_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = std::max(1.0, b.abs().max().item<double>());
  const double diff = (a - b).abs().max().item<double>();
  EXPECT_LE(diff, tol * scale) << what << ": max |diff| " << diff << " (scale " << scale << ")";
}

std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const Tensor t = torch::randint(vocab, {n}, gen, torch::kLong);
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

class ModelFamilyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelFamilyTest, ForwardMatchesReferenceImplementation) {
  const auto config = tiny_config(GetParam());
  CausalLM model = spicy_model(config, 7);
  const fs::path dir = fresh_dir("ref_" + GetParam());
  distil::model::save_pretrained(model, dir);
  CausalLM loaded = distil::model::load_pretrained(dir);
  const auto ids = random_ids(11, config.vocab_size, 3);
  const Tensor input = torch::tensor(ids).view({1, -1});
  torch::NoGradGuard no_grad;
  const Tensor ours = loaded->forward(input, torch::ones_like(input)).squeeze(0);
  const Tensor ref = reference_logits(dir, ids);
  expect_close(ours, ref, 1e-5, GetParam());
  // The model in memory (before saving) agrees with the one loaded back.
  expect_close(model->forward(input, torch::ones_like(input)).squeeze(0), ours, 1e-6, "save/load");
}

// The peer: Hugging Face transformers loads the directory we saved and must produce the same
// logits. Runs where `python3` (or $DISTIL_HF_PYTHON) can import transformers; skipped otherwise.
TEST_P(ModelFamilyTest, MatchesHuggingFaceTransformers) {
  const char* from_env = std::getenv("DISTIL_HF_PYTHON");
  const std::string python = from_env && *from_env ? from_env : "python3";
  const auto config = tiny_config(GetParam());
  CausalLM model = spicy_model(config, 7);
  const fs::path dir = fresh_dir("hf_" + GetParam());
  distil::model::save_pretrained(model, dir);
  const auto ids = random_ids(13, config.vocab_size, 5);
  const std::string command = python + " " + (fs::path(DISTIL_SOURCE_DIR) / "tests/model/hf_reference.py").string() +
                              " '" + dir.string() + "' '" + nlohmann::json(ids).dump() + "' 2>&1";
  const std::string out = distil::test::run_command(command);
  // The reply is the last line; anything before it is the library's own chatter on stderr.
  const size_t last = out.find_last_of('{') == std::string::npos ? 0 : out.rfind("\n{");
  const auto reply = nlohmann::json::parse(last == std::string::npos ? out : out.substr(last), nullptr, false);
  if (reply.is_object() && reply.contains("skip")) GTEST_SKIP() << reply["skip"].get<std::string>();
  ASSERT_TRUE(reply.is_object() && reply.contains("logits")) << command << "\n" << out.substr(0, 2000);
  const auto rows = reply["logits"].get<std::vector<std::vector<float>>>();
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const Tensor theirs = torch::tensor(flat).view({static_cast<int64_t>(rows.size()), -1});
  torch::NoGradGuard no_grad;
  const Tensor input = torch::tensor(ids).view({1, -1});
  const Tensor ours = model->forward(input, torch::ones_like(input)).squeeze(0);
  expect_close(ours, theirs, 1e-4, GetParam() + " vs transformers " + reply["transformers"].get<std::string>());
}

TEST_P(ModelFamilyTest, LogitsInvariantToLeftPadding) {
  const auto config = tiny_config(GetParam());
  CausalLM model = spicy_model(config, 11);
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> lengths = {9, 4, 1, 7};
  const int64_t T = 9;
  Tensor ids = torch::full({4, T}, 5, torch::kLong), mask = torch::zeros({4, T}, torch::kLong);
  std::vector<std::vector<int64_t>> rows;
  for (size_t b = 0; b < lengths.size(); ++b) {
    rows.push_back(random_ids(lengths[b], config.vocab_size, 100 + b));
    for (int64_t t = 0; t < lengths[b]; ++t) ids[b][T - lengths[b] + t] = rows[b][t];
    mask[b].narrow(0, T - lengths[b], lengths[b]).fill_(1);
  }
  const Tensor batched = model->forward(ids, mask);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const Tensor single_ids = torch::tensor(rows[b]).view({1, -1});
    const Tensor single = model->forward(single_ids, torch::ones_like(single_ids)).squeeze(0);
    expect_close(batched[b].narrow(0, T - lengths[b], lengths[b]), single, 1e-5, "row " + std::to_string(b));
  }
}

TEST_P(ModelFamilyTest, KvCacheStepsEqualFullRecomputation) {
  const auto config = tiny_config(GetParam());
  CausalLM model = spicy_model(config, 13);
  torch::NoGradGuard no_grad;
  // Two rows, left padded, extended token by token through the cache.
  const auto a = random_ids(6, config.vocab_size, 1), b = random_ids(3, config.vocab_size, 2);
  Tensor ids = torch::zeros({2, 6}, torch::kLong), mask = torch::zeros({2, 6}, torch::kLong);
  ids[0] = torch::tensor(a);
  mask[0].fill_(1);
  ids[1].narrow(0, 3, 3).copy_(torch::tensor(b));
  mask[1].narrow(0, 3, 3).fill_(1);
  auto cache = distil::model::KVCache::allocate(config, 2, 12, torch::kCPU, torch::kFloat32);
  Tensor step_logits = model->logits(model->hidden_states(ids, mask, &cache)).select(1, 5);
  for (int step = 0; step < 6; ++step) {
    const Tensor full = model->forward(ids, mask).select(1, ids.size(1) - 1);
    expect_close(step_logits, full, 1e-5, "step " + std::to_string(step));
    const Tensor next = torch::tensor({static_cast<int64_t>(17 + step), static_cast<int64_t>(200 - step)}).view({2, 1});
    ids = torch::cat({ids, next}, 1);
    mask = torch::cat({mask, torch::ones_like(next)}, 1);
    step_logits = model->logits(model->hidden_states(next, torch::ones_like(next), &cache)).select(1, 0);
  }
  EXPECT_THROW(model->hidden_states(torch::ones({2, 1}, torch::kLong), torch::ones({2, 1}, torch::kLong), &cache),
               std::invalid_argument);  // capacity 12 is used up
}

INSTANTIATE_TEST_SUITE_P(Families, ModelFamilyTest, ::testing::Values("qwen3", "llama3", "olmo2", "olmo3"));

// ---------------------------------------------------------------- sampling

struct TinySetup {
  fs::path dir;
  distil::text::Tokenizer tokenizer;
  CausalLM model{nullptr};
};

TinySetup tiny_setup(const std::string& name) {
  TinySetup s;
  s.dir = fresh_dir(name);
  distil::text::ByteLevelTokenizerSpec spec;
  spec.merges = {{"t", "h"}, {"th", "e"}, {"Ġ", "t"}, {"a", "n"}, {"Ġ", "a"}};
  distil::text::write_byte_level_tokenizer(s.dir, spec);
  s.tokenizer = distil::text::Tokenizer::from_model_dir(s.dir);
  s.model = spicy_model(tiny_config("qwen3"), 21);
  return s;
}

std::vector<std::vector<int32_t>> prompts_for(const distil::text::Tokenizer& tok) {
  return {tok.encode("the cat sat on the mat"), tok.encode("an"), tok.encode("<|im_start|>user\nhello there")};
}

TEST(ModelGenerate, KvCacheAndRecomputationSampleTheSameTokens) {
  auto s = tiny_setup("gen_cache");
  distil::model::SamplingParams p;
  p.temperature = 0.9;
  p.top_p = 0.95;
  p.top_k = 50;
  p.max_new_tokens = 12;
  p.seed = 5;
  p.eos_ids = {*s.tokenizer.token_to_id("<|im_end|>")};
  const auto cached = distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p);
  p.use_kv_cache = false;
  const auto recomputed = distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p);
  ASSERT_EQ(cached.size(), 3u);
  for (size_t i = 0; i < cached.size(); ++i) {
    EXPECT_EQ(cached[i].tokens, recomputed[i].tokens) << i;
    ASSERT_EQ(cached[i].logprobs.size(), recomputed[i].logprobs.size());
    for (size_t t = 0; t < cached[i].logprobs.size(); ++t) {
      EXPECT_NEAR(cached[i].logprobs[t], recomputed[i].logprobs[t], 1e-4);
      EXPECT_LE(cached[i].logprobs[t], 0.0f);
    }
  }
}

TEST(ModelGenerate, SeededAndReproducibleAndGreedyMatchesArgmax) {
  auto s = tiny_setup("gen_seed");
  distil::model::SamplingParams p;
  p.max_new_tokens = 8;
  p.seed = 1;
  p.eos_ids = {-1};
  const auto a = distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p);
  const auto b = distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p);
  p.seed = 2;
  const auto c = distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p);
  bool any_difference = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    EXPECT_EQ(a[i].tokens.size(), 8u);
    EXPECT_EQ(a[i].finish_reason, distil::model::FinishReason::length);
    any_difference = any_difference || a[i].tokens != c[i].tokens;
  }
  EXPECT_TRUE(any_difference) << "different seeds gave identical samples for every prompt";

  // Greedy: each token is the argmax of the full forward pass on the prefix.
  p.temperature = 0;
  const auto prompts = prompts_for(s.tokenizer);
  const auto greedy = distil::model::generate(s.model, s.tokenizer, prompts, p);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> seq(prompts[i].begin(), prompts[i].end());
    for (int32_t token : greedy[i].tokens) {
      const Tensor ids = torch::tensor(seq).view({1, -1});
      const int64_t best = s.model->forward(ids, torch::ones_like(ids))[0][-1].argmax().item<int64_t>();
      EXPECT_EQ(token, best);
      seq.push_back(token);
    }
  }
}

// Rows of different lengths finishing at different steps (batch compaction, left padding, cache
// row selection) give each prompt exactly what it gets alone.
TEST(ModelGenerate, BatchedGreedyEqualsOneAtATime) {
  auto s = tiny_setup("gen_batch");
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> p;
    for (int t = 0; t < 2 + 3 * i; ++t) p.push_back((37 * i + 11 * t) % 256);
    prompts.push_back(p);
  }
  distil::model::SamplingParams p;
  p.temperature = 0;
  p.max_new_tokens = 12;
  for (int32_t id = 0; id < 300; id += 7) p.eos_ids.push_back(id);  // ~1 in 7 tokens ends a row
  const auto batched = distil::model::generate(s.model, s.tokenizer, prompts, p);
  std::set<size_t> lengths;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto alone = distil::model::generate(s.model, s.tokenizer, {prompts[i]}, p);
    EXPECT_EQ(batched[i].tokens, alone[0].tokens) << "prompt " << i;
    EXPECT_EQ(batched[i].finish_reason, alone[0].finish_reason) << "prompt " << i;
    lengths.insert(batched[i].tokens.size());
  }
  EXPECT_GE(lengths.size(), 3u) << "rows should finish at different steps for this test to mean anything";
}

// The trainer passes each prompt once per sample (G rows alike): one prefill per distinct prompt,
// copied to its rows, must give what prefilling every row gives, token for token (greedy) and
// draw for draw (seeded sampling with per-row seeds, and with one batch seed).
TEST(ModelGenerate, SharedPromptPrefillEqualsPrefillingEveryRow) {
  auto s = tiny_setup("gen_share");
  std::vector<std::vector<int32_t>> prompts;
  std::vector<uint64_t> seeds;
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 3 + 4 * i; ++t) prompt.push_back((29 * i + 13 * t + 5) % 256);
    for (int g = 0; g < 4; ++g) prompts.push_back(prompt), seeds.push_back(1000 * i + g);
  }
  std::swap(prompts[1], prompts[6]);  // groups need not be contiguous
  std::swap(seeds[1], seeds[6]);
  prompts.push_back({7, 8, 9});  // and a prompt of its own
  seeds.push_back(77);
  for (const double temperature : {0.0, 1.0}) {
    for (const bool row_seeds : {true, false}) {
      if (temperature == 0 && !row_seeds) continue;
      SCOPED_TRACE("temperature " + std::to_string(temperature) + (row_seeds ? ", row seeds" : ", one seed"));
      distil::model::SamplingParams p;
      p.temperature = temperature;
      p.max_new_tokens = 10;
      p.seed = 5;
      if (row_seeds) p.row_seeds = seeds;
      for (int32_t id = 3; id < 300; id += 9) p.eos_ids.push_back(id);  // rows finish at different steps
      p.share_prompt_prefill = false;
      const auto every_row = distil::model::generate(s.model, s.tokenizer, prompts, p);
      p.share_prompt_prefill = true;
      const auto shared = distil::model::generate(s.model, s.tokenizer, prompts, p);
      const auto again = distil::model::generate(s.model, s.tokenizer, prompts, p);
      ASSERT_EQ(shared.size(), prompts.size());
      std::set<std::vector<int32_t>> distinct_responses;
      for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(shared[i].tokens, every_row[i].tokens) << "row " << i;
        EXPECT_EQ(shared[i].finish_reason, every_row[i].finish_reason) << "row " << i;
        EXPECT_EQ(shared[i].text, every_row[i].text) << "row " << i;
        ASSERT_EQ(shared[i].logprobs.size(), every_row[i].logprobs.size());
        for (size_t t = 0; t < shared[i].logprobs.size(); ++t)
          EXPECT_NEAR(shared[i].logprobs[t], every_row[i].logprobs[t], 1e-5) << "row " << i << " token " << t;
        EXPECT_EQ(shared[i].tokens, again[i].tokens) << "row " << i;
        distinct_responses.insert(shared[i].tokens);
      }
      // Sampling: the G rows of a prompt draw their own responses, not copies of one.
      if (temperature > 0) EXPECT_GT(distinct_responses.size(), 6u);
    }
  }
}

// Continuous batching: with fewer batch rows than prompts, a finished row takes the next prompt.
// Every prompt must get exactly what it gets in one unlimited batch (greedy: token for token;
// seeded with per-row seeds: draw for draw), through admissions mid-batch, prompts longer than
// the batch's filled length (the cache shifts), cache compactions, shared prefills and the
// sliding-window layers of OLMo 3.
TEST(ModelGenerate, ContinuousBatchingGivesEachPromptWhatOneBatchGives) {
  for (const char* variant : {"qwen3", "olmo3"}) {
    auto s = tiny_setup(std::string("gen_continuous_") + variant);
    s.model = spicy_model(tiny_config(variant), 22);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> seeds;
    // Short prompts first, the longest last; two prompts three times each (shared prefills).
    for (int i = 0; i < 9; ++i) {
      std::vector<int32_t> prompt;
      for (int t = 0; t < 2 + 3 * i; ++t) prompt.push_back((41 * i + 17 * t + 3) % 256);
      const int copies = i == 2 || i == 6 ? 3 : 1;
      for (int g = 0; g < copies; ++g) prompts.push_back(prompt), seeds.push_back(100 * i + g);
    }
    const int64_t B = static_cast<int64_t>(prompts.size());
    for (const bool eos : {false, true}) {
      for (const double temperature : {0.0, 1.0}) {
        SCOPED_TRACE(std::string(variant) + (eos ? ", eos" : ", no eos") + ", temperature " + std::to_string(temperature));
        distil::model::SamplingParams p;
        p.temperature = temperature;
        p.max_new_tokens = 20;
        p.row_seeds = seeds;
        if (eos) {
          for (int32_t id = 5; id < 300; id += 6) p.eos_ids.push_back(id);  // rows finish at different steps
        } else {
          p.eos_ids = {-1};  // every row runs 20 tokens: one slot fills the cache many times over
        }
        const auto one_batch = distil::model::generate(s.model, s.tokenizer, prompts, p);
        std::set<size_t> lengths;
        for (const auto& g : one_batch) lengths.insert(g.tokens.size());
        if (eos) {
          EXPECT_GE(lengths.size(), 3u) << "rows should finish at different steps for this case to mean anything";
        }
        for (const int64_t limit : {1, 2, 3, 5}) {
          SCOPED_TRACE("max_batch_rows " + std::to_string(limit));
          p.max_batch_rows = limit;
          distil::model::GenerateStats stats;
          const auto continuous = distil::model::generate(s.model, s.tokenizer, prompts, p, &stats);
          p.max_batch_rows = 0;
          ASSERT_EQ(continuous.size(), one_batch.size());
          for (size_t i = 0; i < prompts.size(); ++i) {
            EXPECT_EQ(continuous[i].tokens, one_batch[i].tokens) << "row " << i;
            EXPECT_EQ(continuous[i].finish_reason, one_batch[i].finish_reason) << "row " << i;
            EXPECT_EQ(continuous[i].text, one_batch[i].text) << "row " << i;
            ASSERT_EQ(continuous[i].logprobs.size(), one_batch[i].logprobs.size());
            for (size_t t = 0; t < continuous[i].logprobs.size(); ++t)
              EXPECT_NEAR(continuous[i].logprobs[t], one_batch[i].logprobs[t], 1e-5) << "row " << i << " token " << t;
          }
          EXPECT_EQ(stats.admissions, B - limit);
          if (!eos && limit == 1) {
            EXPECT_GT(stats.compactions, 0) << "the cache never filled up";
          }
        }
      }
    }
    // One seed, no per-row seeds: each prompt draws from its own stream, so the output does not
    // depend on how many rows share the batch, and reproduces.
    distil::model::SamplingParams p;
    p.temperature = 1.0;
    p.max_new_tokens = 12;
    p.seed = 3;
    p.max_batch_rows = 2;
    const auto two = distil::model::generate(s.model, s.tokenizer, prompts, p);
    const auto two_again = distil::model::generate(s.model, s.tokenizer, prompts, p);
    p.max_batch_rows = 5;
    const auto five = distil::model::generate(s.model, s.tokenizer, prompts, p);
    std::set<std::vector<int32_t>> distinct;
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(two[i].tokens, two_again[i].tokens) << "row " << i;
      EXPECT_EQ(two[i].tokens, five[i].tokens) << "row " << i;
      distinct.insert(two[i].tokens);
    }
    EXPECT_GT(distinct.size(), prompts.size() - 2) << "rows of one prompt must draw their own samples";
  }
}

TEST(ModelGenerate, ContinuousBatchingRejectsBadLimits) {
  auto s = tiny_setup("gen_continuous_bad");
  distil::model::SamplingParams p;
  p.max_new_tokens = 4;
  p.max_batch_rows = -1;
  EXPECT_THROW(distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p), std::invalid_argument);
  p.max_batch_rows = 1;
  p.use_kv_cache = false;
  EXPECT_THROW(distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p), std::invalid_argument);
  p.max_batch_rows = 3;  // not fewer rows than prompts: the limit changes nothing
  EXPECT_EQ(distil::model::generate(s.model, s.tokenizer, prompts_for(s.tokenizer), p).size(), 3u);
}

TEST(ModelGenerate, StopsAtEosAndStopStrings) {
  auto s = tiny_setup("gen_stop");
  distil::model::SamplingParams p;
  p.max_new_tokens = 10;
  p.temperature = 0;
  p.eos_ids = {-1};
  const auto prompts = prompts_for(s.tokenizer);
  const auto free_run = distil::model::generate(s.model, s.tokenizer, prompts, p);
  // EOS: make the third greedy token of row 0 an end-of-sequence id.
  p.eos_ids = {free_run[0].tokens[2]};
  auto stopped = distil::model::generate(s.model, s.tokenizer, {prompts[0]}, p);
  const auto first_eos = std::find(free_run[0].tokens.begin(), free_run[0].tokens.end(), free_run[0].tokens[2]);
  EXPECT_EQ(stopped[0].finish_reason, distil::model::FinishReason::eos);
  EXPECT_EQ(stopped[0].tokens.size(), static_cast<size_t>(first_eos - free_run[0].tokens.begin()) + 1);
  // Stop string: the decoded text of tokens 3..4 of row 1; generation stops once it appears and
  // the text is cut before it.
  const std::vector<int32_t> piece(free_run[1].tokens.begin() + 3, free_run[1].tokens.begin() + 5);
  const std::string stop = s.tokenizer.decode(piece);
  if (stop.find("\xEF\xBF\xBD") != std::string::npos) GTEST_SKIP() << "greedy tokens split a UTF-8 character";
  p.eos_ids = {-1};
  p.stop_strings = {stop};
  stopped = distil::model::generate(s.model, s.tokenizer, {prompts[1]}, p);
  EXPECT_EQ(stopped[0].finish_reason, distil::model::FinishReason::stop_string);
  EXPECT_LE(stopped[0].tokens.size(), 5u);
  EXPECT_EQ(stopped[0].text.find(stop), std::string::npos);
  const std::string full_text = s.tokenizer.decode(free_run[1].tokens);
  EXPECT_EQ(full_text.substr(0, stopped[0].text.size()), stopped[0].text);
}

TEST(ModelGenerate, RejectsHostileInput) {
  auto s = tiny_setup("gen_bad");
  distil::model::SamplingParams p;
  EXPECT_THROW(distil::model::generate(s.model, s.tokenizer, {{}}, p), std::invalid_argument);
  EXPECT_THROW(distil::model::generate(s.model, s.tokenizer, {{1, 100000}}, p), std::invalid_argument);
  p.top_p = 0;
  EXPECT_THROW(distil::model::generate(s.model, s.tokenizer, {{1}}, p), std::invalid_argument);
  p.top_p = 1;
  p.temperature = NAN;
  EXPECT_THROW(distil::model::generate(s.model, s.tokenizer, {{1}}, p), std::invalid_argument);
}

// ---------------------------------------------------------------- scoring and training helpers

TEST(ModelScore, ChunkedMatchesFullLogSoftmax) {
  const auto config = tiny_config("llama3");
  CausalLM model = spicy_model(config, 31);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7}, {9, 9, 9, 9, 9}};
  const std::vector<std::vector<int32_t>> responses = {{4, 5, 6, 7}, {8, 9}, {}};
  const auto scored = distil::model::score(model, prompts, responses, 5, /*chunk_tokens=*/3);
  ASSERT_EQ(scored.size(), 3u);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int64_t> seq(prompts[i].begin(), prompts[i].end());
    seq.insert(seq.end(), responses[i].begin(), responses[i].end());
    const Tensor ids = torch::tensor(seq).view({1, -1});
    const Tensor lp = torch::log_softmax(model->forward(ids, torch::ones_like(ids))[0], -1);
    ASSERT_EQ(scored[i].token_logprobs.size(), responses[i].size());
    ASSERT_EQ(scored[i].topk_ids.size(), responses[i].size() * 5);
    for (size_t t = 0; t < responses[i].size(); ++t) {
      const int64_t pos = static_cast<int64_t>(prompts[i].size() + t) - 1;
      EXPECT_NEAR(scored[i].token_logprobs[t], lp[pos][responses[i][t]].item<float>(), 1e-5);
      const auto [values, indices] = lp[pos].topk(5);
      for (int64_t k = 0; k < 5; ++k) {
        EXPECT_EQ(scored[i].topk_ids[t * 5 + k], indices[k].item<int64_t>());
        EXPECT_NEAR(scored[i].topk_logprobs[t * 5 + k], values[k].item<float>(), 1e-5);
      }
    }
  }
}

TEST(ModelTraining, ChunkedGatherLogprobsGradientsMatchDirect) {
  const auto config = tiny_config("qwen3");  // tied embeddings: lm_head gradient flows to the embedding
  CausalLM model = spicy_model(config, 41);
  const Tensor ids = torch::tensor({3, 1, 4, 1, 5, 9, 2, 6}, torch::kLong).view({1, -1});
  const Tensor gather = torch::randint(config.vocab_size, {8, 3}, at::detail::createCPUGenerator(1), torch::kLong);
  const Tensor coeff = torch::randn({8, 3}, at::detail::createCPUGenerator(2));

  const auto run = [&](bool chunked) {
    model->zero_grad();
    const Tensor hidden = model->hidden_states(ids, torch::ones_like(ids))[0];
    const Tensor lp = chunked ? distil::model::chunked_gather_logprobs(model, hidden, gather, 3)
                              : torch::log_softmax(model->logits(hidden), -1).gather(-1, gather);
    (lp * coeff).sum().backward();
    std::vector<Tensor> grads;
    for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
    return std::make_pair(lp.detach(), grads);
  };
  const auto [direct_lp, direct_grads] = run(false);
  const auto [chunked_lp, chunked_grads] = run(true);
  expect_close(chunked_lp, direct_lp, 1e-5, "log-probs");
  for (size_t i = 0; i < direct_grads.size(); ++i) expect_close(chunked_grads[i], direct_grads[i], 1e-4, "grad " + std::to_string(i));
}

// The hand-written backward passes (RMSNorm, RoPE) against central finite differences in fp64.
TEST(ModelTraining, GradientsMatchFiniteDifferences) {
  // padded: masks and RoPE tables built per call; unpadded: the per-length cached ones.
  for (const bool padded : {true, false})
  for (const char* variant : {"qwen3", "olmo2", "llama3"}) {
    SCOPED_TRACE(padded ? "padded" : "unpadded");
    CausalLM model = spicy_model(tiny_config(variant), 71);
    model->to(torch::kFloat64);
    const Tensor ids = torch::tensor({3, 1, 4, 1, 5, 9, 2, 6}, torch::kLong).view({2, -1});
    Tensor mask = torch::ones_like(ids);
    if (padded) mask[1][0] = 0;
    const Tensor coeff = torch::randn({2, 4, 300}, at::detail::createCPUGenerator(3), torch::kFloat64);
    const auto loss = [&] { return (model->forward(ids, mask) * coeff).sum(); };
    model->zero_grad();
    loss().backward();
    auto gen = at::detail::createCPUGenerator(9);
    for (auto& item : model->named_parameters()) {
      const std::string& name = item.key();
      Tensor& param = item.value();
      const Tensor flat = param.view({-1});
      const Tensor grad = param.grad().view({-1});
      for (int probe = 0; probe < 3; ++probe) {
        const int64_t i = torch::randint(flat.size(0), {1}, gen, torch::kLong).item<int64_t>();
        const double h = 1e-6, saved = flat[i].item<double>();
        double plus, minus;
        {
          torch::NoGradGuard no_grad;
          flat[i].fill_(saved + h);
          plus = loss().item<double>();
          flat[i].fill_(saved - h);
          minus = loss().item<double>();
          flat[i].fill_(saved);
        }
        const double numeric = (plus - minus) / (2 * h), analytic = grad[i].item<double>();
        EXPECT_NEAR(analytic, numeric, 1e-5 * std::max(1.0, std::abs(numeric))) << variant << " " << name << "[" << i << "]";
      }
    }
  }
}

// fp32 projections on the CPU may go through oneDNN with a hand-written backward (LibTorch without
// MKL); fp64 always goes through F::linear. Both must give the same logits and gradients (the
// finite-difference test above runs in fp64, so this is what checks the fp32 path's backward).
TEST(ModelTraining, Fp32LogitsAndGradientsMatchFp64) {
  std::vector<distil::model::LinearKernel> kernels = {distil::model::LinearKernel::blas};
  if (distil::model::onednn_linear_available()) kernels.push_back(distil::model::LinearKernel::onednn);
  for (const auto kernel : kernels)
  for (const char* variant : {"qwen3", "llama3", "olmo2"}) {
    SCOPED_TRACE(std::string(variant) + ", " + distil::model::linear_kernel_name(kernel) + " projections");
    distil::model::set_cpu_linear_kernel(kernel);
    ModelConfig config = tiny_config(variant);
    config.attention_bias = std::string(variant) == "llama3";  // the bias path too
    CausalLM fp32 = spicy_model(config, 91), fp64 = spicy_model(config, 91);
    fp64->to(torch::kFloat64);
    // 2 x 64 tokens: every projection is above oneDNN's size threshold (>= 2^19 multiply-adds).
    const Tensor ids = torch::tensor(random_ids(128, config.vocab_size, 17)).view({2, 64});
    for (const bool padded : {false, true}) {
      Tensor mask = torch::ones_like(ids);
      if (padded) mask[1].narrow(0, 0, 5).fill_(0);
      const Tensor coeff = torch::randn({2, 64, 300}, at::detail::createCPUGenerator(5), torch::kFloat64);
      fp32->zero_grad();
      fp64->zero_grad();
      const Tensor logits32 = fp32->forward(ids, mask), logits64 = fp64->forward(ids, mask);
      (logits32 * coeff.to(torch::kFloat32)).sum().backward();
      (logits64 * coeff).sum().backward();
      expect_close(logits32.to(torch::kFloat64), logits64, 1e-5, "logits");
      const auto p32 = fp32->named_parameters(), p64 = fp64->named_parameters();
      for (const auto& item : p32) {
        ASSERT_TRUE(item.value().grad().defined()) << item.key();
        expect_close(item.value().grad().to(torch::kFloat64), p64[item.key()].grad(), 1e-4, item.key());
      }
    }
  }
  distil::model::set_cpu_linear_kernel(std::nullopt);
}

// The CPU projection kernels: both give the same values, and the automatic choice is measured
// once per shape, then read from the cache; a corrupt cache is ignored with a log line; the
// environment and set_cpu_linear_kernel force a kernel without measuring. Each test uses its own
// intra-op thread count, because the choice is kept per thread count for the process.
class CpuKernelEnvironment {
 public:
  explicit CpuKernelEnvironment(int threads) : threads_(at::get_num_threads()) {
    for (const char* name : {"DISTIL_LINEAR_KERNEL", "DISTIL_KERNEL_CACHE", "DISTIL_BLAS_LINEAR", "DISTIL_REPRODUCIBLE"}) {
      const char* value = std::getenv(name);
      saved_.emplace_back(name, value ? std::optional<std::string>(value) : std::nullopt);
      unsetenv(name);
    }
    dir_ = std::filesystem::temp_directory_path() / ("distil_kernel_cache_" + std::to_string(::getpid()) + "_" +
                                                     std::to_string(threads));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    setenv("DISTIL_KERNEL_CACHE", file().c_str(), 1);
    at::set_num_threads(threads);
  }
  ~CpuKernelEnvironment() {
    at::set_num_threads(threads_);
    distil::model::set_cpu_linear_kernel(std::nullopt);
    for (const auto& [name, value] : saved_) {
      if (value) setenv(name.c_str(), value->c_str(), 1);
      else unsetenv(name.c_str());
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path file() const { return dir_ / "cpu_kernels.json"; }

 private:
  int threads_;
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
  std::filesystem::path dir_;
};

TEST(CpuLinearKernel, BothKernelsGiveTheSameLogitsAndGradients) {
  if (!distil::model::onednn_linear_available()) GTEST_SKIP() << "this LibTorch has no oneDNN projections (or has MKL)";
  for (const char* variant : {"qwen3", "llama3"}) {
    SCOPED_TRACE(variant);
    ModelConfig config = tiny_config(variant);
    config.attention_bias = std::string(variant) == "llama3";
    // 2 x 64 tokens: every projection is above the 2^19 multiply-add floor, so both kernels run.
    const Tensor ids = torch::tensor(random_ids(128, config.vocab_size, 23)).view({2, 64});
    for (const bool padded : {false, true}) {
      Tensor mask = torch::ones_like(ids);
      if (padded) mask[0].narrow(0, 0, 7).fill_(0);
      const Tensor coeff = torch::randn({2, 64, 300}, at::detail::createCPUGenerator(6));
      std::vector<Tensor> logits;
      std::vector<std::map<std::string, Tensor>> grads;
      for (const auto kernel : {distil::model::LinearKernel::blas, distil::model::LinearKernel::onednn}) {
        distil::model::set_cpu_linear_kernel(kernel);
        CausalLM model = spicy_model(config, 93);
        const Tensor out = model->forward(ids, mask);
        (out * coeff).sum().backward();
        logits.push_back(out.detach());
        grads.emplace_back();
        for (const auto& item : model->named_parameters()) grads.back()[item.key()] = item.value().grad();
      }
      distil::model::set_cpu_linear_kernel(std::nullopt);
      expect_close(logits[1], logits[0], 1e-5, "logits");
      for (const auto& [name, g] : grads[0]) {
        ASSERT_TRUE(g.defined()) << name;
        expect_close(grads[1][name], g, 1e-4, name);
      }
    }
  }
}

TEST(CpuLinearKernel, MeasuredOncePerShapeThenReadFromTheCache) {
  if (!distil::model::onednn_linear_available()) GTEST_SKIP() << "this LibTorch has no oneDNN projections (or has MKL)";
  CpuKernelEnvironment env(5);
  // Measured on first sight (rows rounded up to a power of two), written to the cache file.
  const auto kernel = distil::model::cpu_linear_kernel_for(200, 128, 768);
  auto choice = distil::model::cpu_linear_kernel();
  EXPECT_FALSE(choice.forced);
  ASSERT_EQ(choice.shapes.count("256x128x768"), 1u);
  const auto measured = choice.shapes["256x128x768"];
  EXPECT_GT(measured.blas_seconds, 0);
  EXPECT_GT(measured.onednn_seconds, 0);
  EXPECT_EQ(measured.kernel, kernel);
  std::string note;
  auto cached = distil::model::read_kernel_cache(env.file(), choice.key, &note);
  EXPECT_TRUE(note.empty()) << note;
  ASSERT_EQ(cached.count("256x128x768"), 1u);
  EXPECT_EQ(cached["256x128x768"].kernel, kernel);
  // The same bucket again: not measured again.
  EXPECT_EQ(distil::model::cpu_linear_kernel_for(256, 128, 768), kernel);
  EXPECT_EQ(distil::model::cpu_linear_kernel().shapes.size(), choice.shapes.size());

  // Another thread count is another key. Written there beforehand with made-up timings, the
  // cache decides, in both directions, and nothing is measured.
  std::string error;
  const std::string key = [&] {
    distil::model::KernelCacheKeyInputs in;
    in.cpu = distil::common::this_cpu();
    in.torch_version = TORCH_VERSION;
    in.threads = 3;
    // OpenBLAS's own pool does not follow at::set_num_threads: the same as in the first key.
    const size_t at = choice.key.find("|blas_threads=") + 14;
    in.blas_threads = std::stoi(choice.key.substr(at, choice.key.find('|', at) - at));
    in.kernel_env = distil::model::kernel_env_of([](const char* n) { return static_cast<const char*>(std::getenv(n)); });
    in.freed_memory_kept = distil::model::freed_cpu_memory_kept();
    return distil::model::kernel_cache_key(in);
  }();
  ASSERT_TRUE(distil::model::write_kernel_cache(
      env.file(), key,
      {{"256x128x768", {distil::model::LinearKernel::onednn, 9.0, 1.0}},
       {"512x128x768", {distil::model::LinearKernel::blas, 1.0, 9.0}}},
      &error))
      << error;
  at::set_num_threads(3);
  EXPECT_EQ(distil::model::cpu_linear_kernel().key, key);
  EXPECT_EQ(distil::model::cpu_linear_kernel_for(256, 128, 768), distil::model::LinearKernel::onednn);
  EXPECT_EQ(distil::model::cpu_linear_kernel_for(300, 128, 768), distil::model::LinearKernel::blas);
  choice = distil::model::cpu_linear_kernel();
  EXPECT_EQ(choice.shapes.size(), 2u);
  EXPECT_EQ(choice.shapes["256x128x768"].blas_seconds, 9.0);  // the cache's, not a measurement
}

TEST(CpuLinearKernel, ACorruptCacheIsIgnoredWithALogLineAndReplaced) {
  if (!distil::model::onednn_linear_available()) GTEST_SKIP() << "this LibTorch has no oneDNN projections (or has MKL)";
  CpuKernelEnvironment env(6);
  std::ofstream(env.file()) << "{\"format\": \"distil-cpu-kernels\", \"entries\": tr";
  testing::internal::CaptureStderr();
  const auto choice = distil::model::cpu_linear_kernel();
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("kernel cache"), std::string::npos) << log;
  EXPECT_NE(log.find("not JSON"), std::string::npos) << log;
  EXPECT_TRUE(choice.shapes.empty());
  // Training goes on: the shape is measured and the file rewritten whole.
  distil::model::cpu_linear_kernel_for(256, 128, 512);
  std::string note;
  EXPECT_EQ(distil::model::read_kernel_cache(env.file(), choice.key, &note).count("256x128x512"), 1u);
  EXPECT_TRUE(note.empty()) << note;
}

TEST(CpuLinearKernel, ForcedChoicesAreNotMeasured) {
  if (!distil::model::onednn_linear_available()) GTEST_SKIP() << "this LibTorch has no oneDNN projections (or has MKL)";
  {
    CpuKernelEnvironment env(7);
    setenv("DISTIL_LINEAR_KERNEL", "blas", 1);
    EXPECT_EQ(distil::model::cpu_linear_kernel_for(256, 128, 768), distil::model::LinearKernel::blas);
    CausalLM model = spicy_model(tiny_config("qwen3"), 3);
    const Tensor ids = torch::tensor(random_ids(128, 300, 4)).view({2, 64});
    model->forward(ids, torch::ones_like(ids)).sum().backward();
    const auto choice = distil::model::cpu_linear_kernel();
    ASSERT_TRUE(choice.forced);
    EXPECT_EQ(*choice.forced, distil::model::LinearKernel::blas);
    EXPECT_NE(choice.source.find("DISTIL_LINEAR_KERNEL=blas"), std::string::npos) << choice.source;
    EXPECT_TRUE(choice.shapes.empty());
    EXPECT_FALSE(std::filesystem::exists(env.file()));
    // set_cpu_linear_kernel wins over everything while set.
    distil::model::set_cpu_linear_kernel(distil::model::LinearKernel::onednn);
    EXPECT_EQ(distil::model::cpu_linear_kernel_for(256, 128, 768), distil::model::LinearKernel::onednn);
    EXPECT_EQ(distil::model::cpu_linear_kernel().source, "set in process");
  }
  {
    // Reproducible mode: blas, even when oneDNN is asked for, and no measurement.
    CpuKernelEnvironment env(9);
    setenv("DISTIL_LINEAR_KERNEL", "onednn", 1);
    setenv("DISTIL_REPRODUCIBLE", "pinned:test", 1);
    EXPECT_EQ(distil::model::cpu_linear_kernel_for(256, 128, 768), distil::model::LinearKernel::blas);
    const auto choice = distil::model::cpu_linear_kernel();
    ASSERT_TRUE(choice.forced);
    EXPECT_NE(choice.source.find("reproducible"), std::string::npos) << choice.source;
    EXPECT_TRUE(choice.shapes.empty());
    EXPECT_FALSE(std::filesystem::exists(env.file()));
  }
}

// Unpadded, uncached forwards reuse RoPE tables and masks built for the last (length, device,
// dtype): other lengths, padded calls, a compute-dtype switch and an InferenceMode call in between
// must not leak into later results, and tables first built under InferenceMode must still serve a
// training forward.
TEST(ModelTraining, ReusedRopeTablesAndMasksFollowLengthAndDtype) {
  for (const char* variant : {"qwen3", "olmo3"}) {
    SCOPED_TRACE(variant);
    CausalLM model = spicy_model(tiny_config(variant), 81);
    const Tensor ids6 = torch::tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8}, torch::kLong).view({2, 6});
    const Tensor ids4 = ids6.narrow(1, 0, 4).contiguous();
    Tensor first, again, short_logits, padded;
    {
      torch::NoGradGuard no_grad;
      first = model->forward(ids6, torch::ones_like(ids6));
      short_logits = model->forward(ids4, torch::ones_like(ids4));
      Tensor mask = torch::ones_like(ids6);
      mask[1][0] = 0;
      padded = model->forward(ids6, mask);
      model->set_compute_dtype(torch::kBFloat16);
      EXPECT_EQ(model->forward(ids6, torch::ones_like(ids6)).scalar_type(), torch::kBFloat16);
      model->set_compute_dtype(std::nullopt);
      again = model->forward(ids6, torch::ones_like(ids6));
    }
    EXPECT_TRUE(torch::equal(first, again));
    // causal: a prefix's logits do not depend on what follows
    expect_close(short_logits, first.narrow(1, 0, 4), 1e-5, "prefix");
    expect_close(padded[0], first[0], 1e-5, "unpadded row of a padded batch");
    {
      c10::InferenceMode inference;
      const Tensor ids5 = ids6.narrow(1, 0, 5).contiguous();
      model->forward(ids5, torch::ones_like(ids5));
    }
    const Tensor ids5 = ids6.narrow(1, 0, 5).contiguous();
    model->zero_grad();
    model->forward(ids5, torch::ones_like(ids5)).pow(2).sum().backward();
    for (const auto& p : model->parameters()) EXPECT_TRUE(p.grad().defined());
  }
}

TEST(ModelTraining, GradientCheckpointingGivesTheSameGradients) {
  for (const char* variant : {"qwen3", "olmo2"}) {
    CausalLM model = spicy_model(tiny_config(variant), 51);
    const Tensor ids = torch::tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, torch::kLong).view({2, -1});
    Tensor mask = torch::ones_like(ids);
    mask[1][0] = 0;
    const auto run = [&](bool checkpoint) {
      model->set_gradient_checkpointing(checkpoint);
      model->zero_grad();
      const Tensor logits = model->forward(ids, mask);
      torch::log_softmax(logits, -1).select(-1, 7).sum().backward();
      std::vector<Tensor> grads;
      for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
      return grads;
    };
    const auto plain = run(false), checkpointed = run(true);
    for (size_t i = 0; i < plain.size(); ++i)
      expect_close(checkpointed[i], plain[i], 1e-5, std::string(variant) + " grad " + std::to_string(i));
  }
}

TEST(ModelTraining, Bf16ComputeWithFp32MasterWeights) {
  CausalLM model = spicy_model(tiny_config("qwen3"), 61);
  const Tensor ids = torch::tensor({3, 1, 4, 1, 5, 9}, torch::kLong).view({1, -1});
  Tensor fp32;
  {
    torch::NoGradGuard no_grad;
    fp32 = model->forward(ids, torch::ones_like(ids));
  }
  model->set_compute_dtype(torch::kBFloat16);
  const Tensor bf16 = model->forward(ids, torch::ones_like(ids));
  EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
  expect_close(bf16.to(torch::kFloat32), fp32, 0.1, "bf16 vs fp32");
  bf16.to(torch::kFloat32).sum().backward();
  for (const auto& p : model->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);  // master weights stay fp32
  }
}

// ---------------------------------------------------------------- checkpoints

TEST(ModelCheckpoint, ShardedBf16SaveLoadsBackAndCopiesTokenizer) {
  auto s = tiny_setup("ckpt_tok");
  const fs::path dir = fresh_dir("ckpt_sharded");
  distil::model::save_pretrained(s.model, dir, torch::kBFloat16, s.dir, /*max_shard_bytes=*/20000);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir / "tokenizer_config.json"));
  const auto config = ModelConfig::from_file(dir / "config.json");
  EXPECT_EQ(config.torch_dtype, "bfloat16");
  CausalLM loaded = distil::model::load_pretrained(dir);
  torch::NoGradGuard no_grad;
  const auto original = s.model->hf_state_dict();
  const auto reloaded = loaded->hf_state_dict();
  ASSERT_EQ(original.size(), reloaded.size());
  for (size_t i = 0; i < original.size(); ++i) {
    EXPECT_EQ(original[i].first, reloaded[i].first);
    EXPECT_TRUE(torch::equal(original[i].second.to(torch::kBFloat16).to(torch::kFloat32), reloaded[i].second))
        << original[i].first;
  }
  // Saving again unsharded removes the shards.
  distil::model::save_pretrained(s.model, dir);
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
}

TEST(ModelCheckpoint, ErrorsNameTheProblem) {
  const auto config = tiny_config("llama3");
  CausalLM model = distil::model::make_random(config, 1);
  const fs::path dir = fresh_dir("ckpt_errors");
  distil::model::save_pretrained(model, dir);
  // A config whose shapes disagree with the weights.
  auto j = config.to_json();
  j["intermediate_size"] = 80;
  std::ofstream(dir / "config.json") << j.dump();
  try {
    distil::model::load_pretrained(dir);
    ADD_FAILURE() << "expected a shape error";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("model.layers.0.mlp."), std::string::npos) << message;
    EXPECT_NE(message.find("the config needs"), std::string::npos) << message;
  }
  const auto expect_config_error = [](nlohmann::json cfg, const std::string& field) {
    try {
      ModelConfig::from_json(cfg);
      ADD_FAILURE() << "expected an error about " << field;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  auto bad = config.to_json();
  bad["num_key_value_heads"] = 3;
  expect_config_error(bad, "num_key_value_heads");
  bad = config.to_json();
  bad["hidden_size"] = "big";
  expect_config_error(bad, "hidden_size");
  bad = config.to_json();
  bad["model_type"] = "gpt2";
  expect_config_error(bad, "model_type");
  bad = config.to_json();
  bad["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_config_error(bad, "rope_scaling");
  bad = config.to_json();
  bad.erase("vocab_size");
  expect_config_error(bad, "vocab_size");
  EXPECT_THROW(model->forward(torch::tensor({{1, 300}}), torch::ones({1, 2}, torch::kLong)), std::invalid_argument);
}

TEST(ModelCheckpoint, ConfigRoundTripsThroughJson) {
  for (const char* variant : {"qwen3", "llama3", "olmo2", "olmo3"}) {
    const auto c = tiny_config(variant);
    const auto back = ModelConfig::from_json(c.to_json());
    EXPECT_EQ(back.to_json(), c.to_json()) << variant;
  }
}

// transformers 5 writes OLMo 3's RoPE per layer type; agreeing types load, differing ones are refused.
TEST(ModelCheckpoint, PerLayerTypeRopeParametersFromTransformers5) {
  auto j = tiny_config("olmo3").to_json();
  ASSERT_TRUE(j.contains("rope_parameters"));
  EXPECT_EQ(j["rope_parameters"]["sliding_attention"]["rope_theta"], j["rope_theta"]);
  j.erase("rope_theta");
  j["rope_parameters"] = {{"full_attention", {{"rope_type", "default"}, {"rope_theta", 250000.0}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 250000.0}}}};
  EXPECT_EQ(ModelConfig::from_json(j).rope_theta, 250000.0);
  j["rope_parameters"]["sliding_attention"]["rope_theta"] = 500000.0;
  try {
    ModelConfig::from_json(j);
    ADD_FAILURE() << "differing per-type RoPE was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("rope_parameters"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- CUDA
// Run where LibTorch sees a CUDA device (the GPU machines' LibTorch 2.x); elsewhere each test is
// reported as Skipped with the reason. The CPU results above are the reference: fp32 on the GPU
// must agree with them, bf16 must stay close, and the cache/padding invariants must still hold.

#define DISTIL_SKIP_WITHOUT_CUDA()                                                                  \
  if (!torch::cuda::is_available())                                                                 \
  GTEST_SKIP() << "needs a CUDA device; this LibTorch (" TORCH_VERSION ") sees none"

// A padded batch (masked attention path) and an unpadded one (plain causal path).
std::pair<Tensor, Tensor> padded_batch(int64_t vocab) {
  const std::vector<int64_t> lengths = {12, 5, 9};
  const int64_t T = 12;
  Tensor ids = torch::full({3, T}, 0, torch::kLong), mask = torch::zeros({3, T}, torch::kLong);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const auto row = random_ids(lengths[b], vocab, 300 + b);
    for (int64_t t = 0; t < lengths[b]; ++t) ids[b][T - lengths[b] + t] = row[t];
    mask[b].narrow(0, T - lengths[b], lengths[b]).fill_(1);
  }
  return {ids, mask};
}

// Loss over the real positions only, so padded rows do not contribute garbage gradients.
Tensor masked_loss(const Tensor& logits, const Tensor& mask) {
  const Tensor lp = torch::log_softmax(logits.to(torch::kFloat32), -1).select(-1, 3);
  return (lp * mask.to(torch::kFloat32)).sum();
}

TEST_P(ModelFamilyTest, CudaForwardAndGradientsMatchCpu) {
  DISTIL_SKIP_WITHOUT_CUDA();
  const auto config = tiny_config(GetParam());
  for (const bool padded : {true, false}) {
    CausalLM cpu = spicy_model(config, 17);
    CausalLM gpu = spicy_model(config, 17);
    gpu->to(torch::kCUDA);
    auto [ids, mask] = padded_batch(config.vocab_size);
    if (!padded) mask.fill_(1);
    const Tensor cpu_logits = cpu->forward(ids, mask);
    const Tensor gpu_logits = gpu->forward(ids.cuda(), mask.cuda());
    ASSERT_TRUE(gpu_logits.is_cuda());
    const Tensor real = mask.to(torch::kBool).unsqueeze(-1);
    expect_close(gpu_logits.cpu().masked_fill(real.logical_not(), 0), cpu_logits.masked_fill(real.logical_not(), 0), 1e-4,
                 GetParam() + (padded ? " padded" : " dense"));
    masked_loss(cpu_logits, mask).backward();
    masked_loss(gpu_logits, mask.cuda()).backward();
    const auto cpu_params = cpu->named_parameters(), gpu_params = gpu->named_parameters();
    for (const auto& item : cpu_params) {
      const Tensor g_cpu = item.value().grad(), g_gpu = gpu_params[item.key()].grad();
      ASSERT_TRUE(g_cpu.defined() && g_gpu.defined()) << item.key();
      expect_close(g_gpu.cpu(), g_cpu, 1e-4, GetParam() + " grad " + item.key());
    }
  }
}

TEST_P(ModelFamilyTest, CudaKvCacheStepsEqualFullRecomputation) {
  DISTIL_SKIP_WITHOUT_CUDA();
  const auto config = tiny_config(GetParam());
  CausalLM model = spicy_model(config, 19);
  model->to(torch::kCUDA);
  torch::NoGradGuard no_grad;
  auto [ids, mask] = padded_batch(config.vocab_size);
  ids = ids.cuda();
  mask = mask.cuda();
  auto cache = distil::model::KVCache::allocate(config, 3, 20, torch::kCUDA, torch::kFloat32);
  Tensor step_logits = model->logits(model->hidden_states(ids, mask, &cache)).select(1, ids.size(1) - 1);
  for (int step = 0; step < 6; ++step) {
    const Tensor full = model->forward(ids, mask).select(1, ids.size(1) - 1);
    expect_close(step_logits.cpu(), full.cpu(), 1e-4, GetParam() + " step " + std::to_string(step));
    const Tensor next = torch::tensor({int64_t{17 + step}, int64_t{200 - step}, int64_t{42}}).view({3, 1}).cuda();
    ids = torch::cat({ids, next}, 1);
    mask = torch::cat({mask, torch::ones_like(next)}, 1);
    step_logits = model->logits(model->hidden_states(next, torch::ones_like(next), &cache)).select(1, 0);
  }
}

TEST(ModelCuda, Bf16ComputeOnGpuStaysCloseAndKeepsFp32MasterGradients) {
  DISTIL_SKIP_WITHOUT_CUDA();
  CausalLM model = spicy_model(tiny_config("qwen3"), 61);
  model->to(torch::kCUDA);
  for (const bool padded : {false, true}) {
    auto [ids, mask] = padded_batch(300);
    if (!padded) mask.fill_(1);
    ids = ids.cuda();
    mask = mask.cuda();
    Tensor fp32;
    {
      torch::NoGradGuard no_grad;
      model->set_compute_dtype(std::nullopt);
      fp32 = model->forward(ids, mask);
    }
    model->set_compute_dtype(torch::kBFloat16);
    model->zero_grad();
    const Tensor bf16 = model->forward(ids, mask);
    EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16);
    const Tensor real = mask.to(torch::kBool).unsqueeze(-1).logical_not();
    expect_close(bf16.to(torch::kFloat32).masked_fill(real, 0).cpu(), fp32.masked_fill(real, 0).cpu(), 0.1,
                 padded ? "bf16 padded" : "bf16 dense");
    masked_loss(bf16, mask).backward();
    for (const auto& p : model->parameters()) {
      ASSERT_TRUE(p.grad().defined());
      EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
      EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
    }
  }
}

TEST(ModelCuda, GreedyGenerationAndScoringMatchCpu) {
  DISTIL_SKIP_WITHOUT_CUDA();
  auto cpu = tiny_setup("cuda_gen_cpu");
  auto gpu = tiny_setup("cuda_gen_gpu");
  gpu.model->to(torch::kCUDA);
  distil::model::SamplingParams p;
  p.temperature = 0.0;
  p.max_new_tokens = 16;
  const auto prompts = prompts_for(cpu.tokenizer);
  const auto on_cpu = distil::model::generate(cpu.model, cpu.tokenizer, prompts, p);
  const auto on_gpu = distil::model::generate(gpu.model, gpu.tokenizer, prompts, p);
  ASSERT_EQ(on_cpu.size(), on_gpu.size());
  std::vector<std::vector<int32_t>> responses;
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    EXPECT_EQ(on_gpu[i].tokens, on_cpu[i].tokens) << i;
    responses.push_back(on_cpu[i].tokens);
  }
  // Seeded sampling on the GPU is reproducible run to run.
  p.temperature = 1.0;
  p.seed = 9;
  EXPECT_EQ(distil::model::generate(gpu.model, gpu.tokenizer, prompts, p)[0].tokens,
            distil::model::generate(gpu.model, gpu.tokenizer, prompts, p)[0].tokens);
  const auto scored_cpu = distil::model::score(cpu.model, prompts, responses, 4, 7);
  const auto scored_gpu = distil::model::score(gpu.model, prompts, responses, 4, 7);
  for (size_t i = 0; i < responses.size(); ++i) {
    ASSERT_EQ(scored_gpu[i].token_logprobs.size(), scored_cpu[i].token_logprobs.size());
    for (size_t t = 0; t < scored_cpu[i].token_logprobs.size(); ++t)
      EXPECT_NEAR(scored_gpu[i].token_logprobs[t], scored_cpu[i].token_logprobs[t], 1e-4) << i << "," << t;
  }
}

}  // namespace
