// The decoder: one implementation, family switches for Qwen3 (per-head q/k RMSNorm, pre-norm),
// Llama 3 (pre-norm, RoPE frequency scaling) and OLMo 2/3 (q/k RMSNorm over the whole projection,
// norms after attention/MLP instead of before, OLMo 3 sliding-window layers).
// q/k/v and gate/up projections are stored fused (one matmul each); HF names are mapped on load
// and save.
#include "trainer/model/model.h"

#include <ATen/Config.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "trainer/text/safetensors.h"

// OpenBLAS keeps its own thread pool beside LibTorch's (Debian's LibTorch uses a generic BLAS);
// weak, so absent (null) with MKL or another BLAS. Its size is part of the kernel cache key.
extern "C" int openblas_get_num_threads(void) __attribute__((weak));

namespace distil::model {
namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

int64_t require_int(const nlohmann::json& j, const char* field) {
  if (!j.contains(field) || !j[field].is_number_integer())
    throw std::invalid_argument(std::string("config.json: \"") + field + "\" must be an integer");
  return j[field].get<int64_t>();
}
int64_t int_or(const nlohmann::json& j, const char* field, int64_t fallback) {
  if (!j.contains(field) || j[field].is_null()) return fallback;
  return require_int(j, field);
}
double number_or(const nlohmann::json& j, const char* field, double fallback) {
  if (!j.contains(field) || j[field].is_null()) return fallback;
  if (!j[field].is_number()) throw std::invalid_argument(std::string("config.json: \"") + field + "\" must be a number");
  return j[field].get<double>();
}
bool bool_or(const nlohmann::json& j, const char* field, bool fallback) {
  if (!j.contains(field) || j[field].is_null()) return fallback;
  if (!j[field].is_boolean()) throw std::invalid_argument(std::string("config.json: \"") + field + "\" must be a boolean");
  return j[field].get<bool>();
}
std::optional<int64_t> optional_token(const nlohmann::json& j, const char* field) {
  if (!j.contains(field) || j[field].is_null()) return std::nullopt;
  if (j[field].is_array()) {  // e.g. eos_token_id: [1, 2]; the first is kept here
    if (j[field].empty() || !j[field][0].is_number_integer())
      throw std::invalid_argument(std::string("config.json: \"") + field + "\" must be an integer or a list of them");
    return j[field][0].get<int64_t>();
  }
  return require_int(j, field);
}

// Norms and softmax run in fp32 (fp64 when the model is fp64, e.g. for finite-difference tests).
torch::Dtype accumulate_type(const Tensor& x) { return x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat32; }

// RMSNorm over the last dimension in fp32. Qwen/Llama cast back before the weight multiply,
// OLMo 2 multiplies in fp32 first; identical in fp32, different rounding in bf16. A hand-written
// backward keeps the autograd graph at one node per norm (small models are overhead-bound).
struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& weight, double eps,
                        bool weight_in_fp32) {
    const auto dtype = x.scalar_type();
    const Tensor xf = x.to(accumulate_type(x));
    const Tensor r = torch::rsqrt(xf.pow(2).mean(-1, true).add_(eps));
    const Tensor normed = xf * r;
    // Saves the normalised rows when they cost no more memory than x (fp32/fp64 compute), so
    // backward need not recompute them; with bf16 activations x is saved and normed recomputed.
    const bool save_normed = dtype == accumulate_type(x);
    ctx->save_for_backward({save_normed ? normed : x, weight, r});
    ctx->saved_data["normed"] = save_normed;
    if (weight_in_fp32) return (weight.to(accumulate_type(x)) * normed).to(dtype);
    return weight.to(dtype) * normed.to(dtype);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &weight = saved[1], &r = saved[2];
    const auto acc = r.scalar_type();
    const Tensor normed = ctx->saved_data["normed"].toBool() ? saved[0] : saved[0].to(acc) * r;
    const Tensor g = grads[0].to(acc);
    const Tensor gw = g * weight.to(acc);
    // d(x_j r)/dx_i = r (delta_ij - x_i x_j r^2 / n)
    const Tensor grad_x = (torch::addcmul(gw, normed, (gw * normed).mean(-1, true), -1) * r).to(grads[0].scalar_type());
    Tensor grad_w = (g * normed).sum_to_size(weight.sizes()).to(weight.scalar_type());
    return {grad_x, grad_w, Tensor(), Tensor()};
  }
};

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps, bool weight_in_fp32) {
  return RmsNormFunction::apply(x, weight, eps, weight_in_fp32);
}

// y = x W^T on the CPU through oneDNN or through the BLAS (at::linear), whichever measured faster
// on this machine (cpu_linear_kernel(): forced by the environment, else the per-machine cache,
// else a calibration on first use). LibTorch builds without MKL (Debian's python3-torch / libtorch
// use a generic BLAS, OpenBLAS here) ship oneDNN too (mkldnn_linear), whose JIT kernels run these
// sizes up to ~2x faster than OpenBLAS on some CPUs and slower on others (docs/model.md#which-cpu-kernel).
// One autograd node: backward is dX = dY W and dW = dY^T X, also through oneDNN. Dense <-> oneDNN
// conversions of the activations are plain copies; the weight is read in place.
// The kernel chosen for this shape at this thread count (defined with cpu_linear_kernel below).
LinearKernel current_linear_kernel(int64_t rows, int64_t in, int64_t out);

bool onednn_eligible(const Tensor& x, const Tensor& weight) {
#if AT_MKLDNN_ENABLED()
  static const bool available = onednn_linear_available();
  return available && x.device().is_cpu() && weight.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
         weight.scalar_type() == torch::kFloat32 && x.layout() == torch::kStrided && weight.layout() == torch::kStrided &&
         x.numel() > 0 && weight.numel() > 0 &&
         // oneDNN costs ~30 us more per call (primitive lookup, conversions): below ~0.5M
         // multiply-adds (e.g. decoding a few rows at a time) the BLAS is faster.
         x.numel() / x.size(-1) * weight.size(0) * weight.size(1) >= (int64_t{1} << 19);
#else
  (void)x, (void)weight;
  return false;
#endif
}

#if AT_MKLDNN_ENABLED()
// a [N, K] (dense), b [M, K] (dense, contiguous): a b^T as a dense [N, M].
Tensor onednn_matmul_t(const Tensor& a, const Tensor& b) {
  return at::mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous(), {}).to_dense();
}

struct OnednnLinearFunction : public torch::autograd::Function<OnednnLinearFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& weight) {
    const int64_t in = weight.size(1), out = weight.size(0);
    const Tensor rows = x.reshape({-1, in});
    ctx->save_for_backward({rows, weight});
    auto shape = x.sizes().vec();
    shape.back() = out;
    return onednn_matmul_t(rows, weight).view(shape);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &rows = saved[0], &weight = saved[1];
    const Tensor g = grads[0].reshape({-1, weight.size(0)});
    Tensor grad_x, grad_w;
    if (ctx->needs_input_grad(0)) {
      auto shape = grads[0].sizes().vec();
      shape.back() = weight.size(1);
      grad_x = onednn_matmul_t(g, weight.t()).view(shape);
    }
    if (ctx->needs_input_grad(1)) grad_w = onednn_matmul_t(g.t(), rows.t());
    return {grad_x, grad_w};
  }
};
#endif

// F::linear (x W^T + b), through oneDNN where eligible and chosen.
Tensor project(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor()) {
#if AT_MKLDNN_ENABLED()
  if (onednn_eligible(x, weight) &&
      current_linear_kernel(x.numel() / x.size(-1), weight.size(1), weight.size(0)) == LinearKernel::onednn) {
    Tensor y = OnednnLinearFunction::apply(x, weight);
    return bias.defined() ? y + bias : y;
  }
#endif
  return F::linear(x, weight, bias);
}

Tensor rope_inverse_frequencies(const ModelConfig& c) {
  const int64_t d = c.head_dim;
  Tensor inv = 1.0 / torch::pow(c.rope_theta, torch::arange(0, d, 2, torch::kFloat64) / static_cast<double>(d));
  const auto& s = c.rope_scaling;
  if (s.type == "llama3") {
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
    const Tensor wavelen = 2 * M_PI / inv;
    Tensor scaled = torch::where(wavelen > low_wavelen, inv / s.factor, inv);
    const Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    const Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  } else if (s.type == "linear") {
    inv = inv / s.factor;
  }
  return inv.to(torch::kFloat32);
}

}  // namespace

// ---------------------------------------------------------------- config

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw std::invalid_argument("config.json must be a JSON object");
  ModelConfig c;
  if (!j.contains("model_type") || !j["model_type"].is_string())
    throw std::invalid_argument("config.json: \"model_type\" must be a string");
  const std::string type = j["model_type"].get<std::string>();
  if (type == "qwen3") {
    c.family = Family::qwen3;
  } else if (type == "llama") {
    c.family = Family::llama;
  } else if (type == "olmo2" || type == "olmo3") {
    c.family = Family::olmo;
  } else {
    throw std::invalid_argument("config.json: model_type \"" + type + "\" is not supported (qwen3, llama, olmo2, olmo3)");
  }
  c.vocab_size = require_int(j, "vocab_size");
  c.hidden_size = require_int(j, "hidden_size");
  c.intermediate_size = require_int(j, "intermediate_size");
  c.num_hidden_layers = require_int(j, "num_hidden_layers");
  c.num_attention_heads = require_int(j, "num_attention_heads");
  c.num_key_value_heads = int_or(j, "num_key_value_heads", c.num_attention_heads);
  c.head_dim = int_or(j, "head_dim", 0);
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  c.rms_norm_eps = number_or(j, "rms_norm_eps", c.family == Family::olmo ? 1e-5 : 1e-6);
  c.tie_word_embeddings = bool_or(j, "tie_word_embeddings", false);
  c.max_position_embeddings = int_or(j, "max_position_embeddings", 4096);
  c.attention_bias = bool_or(j, "attention_bias", false);
  c.torch_dtype = j.contains("torch_dtype") && j["torch_dtype"].is_string() ? j["torch_dtype"].get<std::string>()
                  : j.contains("dtype") && j["dtype"].is_string()           ? j["dtype"].get<std::string>()
                                                                            : "float32";
  c.bos_token_id = optional_token(j, "bos_token_id");
  c.eos_token_id = optional_token(j, "eos_token_id");
  c.pad_token_id = optional_token(j, "pad_token_id");
  // transformers 5 moves rope settings into "rope_parameters", and for models with several layer
  // types (OLMo 3) keys them by type: {"sliding_attention": {...}, "full_attention": {...}}. One RoPE
  // serves every layer here, so per-type settings must agree; otherwise refuse rather than guess.
  const nlohmann::json* rope = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) rope = &j["rope_parameters"];
  if (rope && (rope->contains("full_attention") || rope->contains("sliding_attention"))) {
    const nlohmann::json* first = nullptr;
    for (const auto& [type, params] : rope->items()) {
      if (!params.is_object())
        throw std::invalid_argument("config.json: rope_parameters." + type + " must be an object");
      if (first && params != *first)
        throw std::invalid_argument("config.json: rope_parameters differ between layer types (" + rope->dump() +
                                    "); per-layer-type RoPE is not supported");
      first = &params;
    }
    rope = first;
  }
  c.rope_theta = number_or(rope ? *rope : j, "rope_theta", number_or(j, "rope_theta", 10000.0));
  const nlohmann::json* scaling = nullptr;
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) scaling = &j["rope_scaling"];
  else if (rope) scaling = rope;
  if (scaling) {
    const auto& s = *scaling;
    std::string rope_type = s.contains("rope_type") && s["rope_type"].is_string() ? s["rope_type"].get<std::string>()
                            : s.contains("type") && s["type"].is_string()         ? s["type"].get<std::string>()
                                                                                  : "default";
    if (rope_type == "llama3" || rope_type == "linear") {
      c.rope_scaling.type = rope_type;
      c.rope_scaling.factor = number_or(s, "factor", 1.0);
      c.rope_scaling.low_freq_factor = number_or(s, "low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = number_or(s, "high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings = int_or(s, "original_max_position_embeddings", 8192);
    } else if (rope_type != "default") {
      throw std::invalid_argument("config.json: rope_scaling type \"" + rope_type + "\" is not supported (llama3, linear)");
    }
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    throw std::invalid_argument("config.json: \"rope_scaling\" must be an object or null");
  }
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    for (const auto& t : j["layer_types"]) {
      if (!t.is_string()) throw std::invalid_argument("config.json: \"layer_types\" must hold strings");
      c.sliding_layers.push_back(t.get<std::string>() == "sliding_attention");
    }
    c.sliding_window = int_or(j, "sliding_window", 0);
  }
  c.validate();
  return c;
}

ModelConfig ModelConfig::from_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot open " + path.string());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path.string() + ": invalid JSON: " + e.what());
  }
  try {
    return from_json(j);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path.string() + ": " + e.what());
  }
}

void ModelConfig::validate() const {
  const auto check = [](bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument("config: " + message);
  };
  check(vocab_size > 0 && vocab_size <= (int64_t{1} << 24), "vocab_size must be in 1..16777216");
  check(hidden_size > 0 && hidden_size <= 65536, "hidden_size must be in 1..65536");
  check(intermediate_size > 0 && intermediate_size <= 262144, "intermediate_size must be in 1..262144");
  check(num_hidden_layers > 0 && num_hidden_layers <= 1024, "num_hidden_layers must be in 1..1024");
  check(num_attention_heads > 0 && num_attention_heads <= 1024, "num_attention_heads must be in 1..1024");
  check(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
        "num_key_value_heads must divide num_attention_heads");
  check(head_dim > 0 && head_dim % 2 == 0 && head_dim <= 1024, "head_dim must be even and in 2..1024");
  check(rope_theta > 0 && std::isfinite(rope_theta), "rope_theta must be positive");
  check(rms_norm_eps > 0 && rms_norm_eps < 1, "rms_norm_eps must be in (0, 1)");
  check(max_position_embeddings > 0, "max_position_embeddings must be positive");
  check(rope_scaling.type.empty() || (rope_scaling.factor > 0 && rope_scaling.high_freq_factor != rope_scaling.low_freq_factor &&
                                      rope_scaling.original_max_position_embeddings > 0),
        "rope_scaling needs factor > 0, high_freq_factor != low_freq_factor, original_max_position_embeddings > 0");
  check(sliding_layers.empty() || static_cast<int64_t>(sliding_layers.size()) == num_hidden_layers,
        "layer_types must have num_hidden_layers entries");
  check(sliding_window >= 0, "sliding_window must be non-negative");
}

std::string ModelConfig::model_type() const {
  switch (family) {
    case Family::qwen3: return "qwen3";
    case Family::llama: return "llama";
    case Family::olmo: return sliding_layers.empty() ? "olmo2" : "olmo3";
  }
  return "qwen3";
}

nlohmann::json ModelConfig::to_json() const {
  static const char* kArchitectures[] = {"Qwen3ForCausalLM", "LlamaForCausalLM", "Olmo2ForCausalLM"};
  std::string arch = kArchitectures[static_cast<int>(family)];
  if (model_type() == "olmo3") arch = "Olmo3ForCausalLM";
  nlohmann::json j = {{"architectures", {arch}},
                      {"model_type", model_type()},
                      {"vocab_size", vocab_size},
                      {"hidden_size", hidden_size},
                      {"intermediate_size", intermediate_size},
                      {"num_hidden_layers", num_hidden_layers},
                      {"num_attention_heads", num_attention_heads},
                      {"num_key_value_heads", num_key_value_heads},
                      {"head_dim", head_dim},
                      {"hidden_act", "silu"},
                      {"rope_theta", rope_theta},
                      {"rms_norm_eps", rms_norm_eps},
                      {"tie_word_embeddings", tie_word_embeddings},
                      {"max_position_embeddings", max_position_embeddings},
                      {"attention_bias", attention_bias},
                      {"attention_dropout", 0.0},
                      {"initializer_range", 0.02},
                      {"use_cache", true},
                      {"torch_dtype", torch_dtype}};
  if (family == Family::llama) j["mlp_bias"] = false;
  j["rope_scaling"] = nullptr;
  if (!rope_scaling.type.empty()) {
    j["rope_scaling"] = {{"rope_type", rope_scaling.type}, {"factor", rope_scaling.factor}};
    if (rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
  }
  if (!sliding_layers.empty()) {
    // transformers 5 reads OLMo 3's RoPE per layer type and fills a missing type with its own
    // default theta (500000), so spell out the one RoPE this model uses for both types.
    nlohmann::json rope = j["rope_scaling"].is_object() ? j["rope_scaling"] : nlohmann::json{{"rope_type", "default"}};
    rope["rope_theta"] = rope_theta;
    j["rope_parameters"] = {{"full_attention", rope}, {"sliding_attention", rope}};
    nlohmann::json types = nlohmann::json::array();
    for (bool s : sliding_layers) types.push_back(s ? "sliding_attention" : "full_attention");
    j["layer_types"] = types;
    j["sliding_window"] = sliding_window;
  }
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_id) j["eos_token_id"] = *eos_token_id;
  if (pad_token_id) j["pad_token_id"] = *pad_token_id;
  return j;
}

torch::Dtype dtype_from_name(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "float") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return torch::kFloat16;
  throw std::invalid_argument("unknown dtype \"" + name + "\" (float32, bfloat16, float16)");
}

std::string dtype_name(torch::Dtype dtype) {
  if (dtype == torch::kFloat32) return "float32";
  if (dtype == torch::kBFloat16) return "bfloat16";
  if (dtype == torch::kFloat16) return "float16";
  throw std::invalid_argument(std::string("unsupported model dtype ") + c10::toString(dtype));
}

// ---------------------------------------------------------------- KV cache

KVCache KVCache::allocate(const ModelConfig& config, int64_t batch, int64_t capacity, torch::Device device,
                          torch::Dtype dtype) {
  if (batch <= 0 || capacity <= 0) throw std::invalid_argument("KVCache needs batch > 0 and capacity > 0");
  KVCache cache;
  const auto options = torch::TensorOptions().device(device).dtype(dtype);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    cache.keys.push_back(torch::zeros({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
    cache.values.push_back(torch::zeros({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
  }
  cache.attention_mask = torch::zeros({batch, capacity}, torch::TensorOptions().device(device).dtype(torch::kLong));
  cache.next_position = torch::zeros({batch}, torch::TensorOptions().device(device).dtype(torch::kLong));
  cache.capacity = capacity;
  return cache;
}

void KVCache::select_rows(const torch::Tensor& rows) {
  const Tensor index = rows.to(attention_mask.device(), torch::kLong);
  for (auto& k : keys) k = k.index_select(0, index);
  for (auto& v : values) v = v.index_select(0, index);
  attention_mask = attention_mask.index_select(0, index);
  next_position = next_position.index_select(0, index);
}

// ---------------------------------------------------------------- the decoder

struct CausalLMImpl::Layer {
  Tensor qkv_weight, qkv_bias, o_weight;
  Tensor q_norm, k_norm;  // Qwen3: [head_dim]; OLMo 2/3: [heads * head_dim], [kv_heads * head_dim]
  Tensor gate_up_weight, down_weight;
  Tensor input_norm;      // Qwen3/Llama only: before attention
  Tensor post_attn_norm;  // Qwen3/Llama: before the MLP; OLMo 2/3: on the attention output
  Tensor post_mlp_norm;   // OLMo 2/3 only: on the MLP output
  bool sliding = false;
};

namespace {

// RoPE tables and attention masks of one forward: T queries at positions [start, start + T) of
// the sequence, over the keys [0, S = start + T). `rows` is B, or 1 when every row of the batch
// has the same positions and mask.
struct PositionTables {
  Tensor cos, sin;          // [rows, T, 1, D] in the compute dtype; sin is [-sin, sin] (see RopeFunction)
  Tensor allowed;           // [rows, 1, 1, T, S] bool: which keys each query attends to
  Tensor allowed_sliding;   // same, restricted to the sliding window (OLMo 3), or undefined
  // LibTorch 1.x only (no scaled_dot_product_attention): the same masks as additive 0/-inf biases
  // shaped for grouped-query scores [B*KV or 1, rep*T, S]; undefined with LibTorch 2.
  Tensor additive, additive_sliding;
};

}  // namespace

// The tables of the last unpadded, uncached forward, reused while (T, device, dtype) stay the same.
struct CausalLMImpl::StaticInputs {
  std::mutex mutex;
  int64_t length = 0;
  PositionTables tables;
};

namespace {

// Everything one layer needs besides its weights.
struct LayerInputs {
  PositionTables tables;
  bool causal_dense = false;  // no padding, no cache: plain causal attention (fast SDPA path)
  KVCache* cache = nullptr;
  int64_t layer_index = 0;
  int64_t start = 0;        // positions already in the cache
};

// q [B, H, T, D]; k, v [B, KV, S, D]. Query heads are grouped per kv head so K/V are never
// repeated: [B*KV, rep*T, D] x [B*KV, S, D]^T.
Tensor attention_core(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& allowed, const Tensor& additive,
                      bool causal_dense) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t KV = k.size(1), S = k.size(2), rep = H / KV;
#if TORCH_VERSION_MAJOR >= 2
  (void)additive;
#if TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 5
  // enable_gqa (2.5+) keeps the flash kernel for grouped heads; with an explicit mask it is not used.
  if (causal_dense)
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/rep > 1);
#else
  if (causal_dense && rep == 1) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#endif
  const Tensor grouped = q.reshape({B, KV, rep * T, D});
  const Tensor mask = allowed.expand({B, 1, rep, T, S}).reshape({B, 1, rep * T, S});
  // reshape, not view: the CUDA kernels may return a [B, T, H, D]-strided result.
  return at::scaled_dot_product_attention(grouped, k, v, mask).reshape({B, H, T, D});
#else
  (void)causal_dense;
  (void)allowed;
  const Tensor grouped = q.reshape({B * KV, rep * T, D});
  // scores = mask + scale * q k^T in one kernel.
  const Tensor scores = torch::baddbmm(additive, grouped, k.reshape({B * KV, S, D}).transpose(1, 2), 1.0,
                                       1.0 / std::sqrt(static_cast<double>(D)));
  const Tensor probs = torch::softmax(scores, -1, accumulate_type(q)).to(q.scalar_type());
  return torch::bmm(probs, v.reshape({B * KV, S, D})).view({B, H, T, D});
#endif
}

#if TORCH_VERSION_MAJOR < 2
// Additive 0/-inf form of `allowed` [B,1,1,T,S] for grouped scores; one shared row block when
// every row of the batch has the same mask (no padding).
Tensor additive_mask(const Tensor& allowed, int64_t kv_heads, int64_t rep, bool rows_identical, torch::Dtype dtype) {
  const int64_t B = allowed.size(0), T = allowed.size(3), S = allowed.size(4);
  const Tensor bias = torch::zeros(allowed.sizes(), allowed.options().dtype(dtype))
                          .masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
  if (rows_identical) return bias.narrow(0, 0, 1).expand({1, 1, rep, T, S}).reshape({1, rep * T, S});
  return bias.expand({B, kv_heads, rep, T, S}).reshape({B * kv_heads, rep * T, S});
}
#endif

// The two halves of the last dimension swapped: [x1, x2] -> [x2, x1], one kernel.
Tensor swap_halves(const Tensor& x) {
  auto halves = x.sizes().vec();
  halves.back() /= 2;
  halves.insert(halves.end() - 1, 2);
  return x.view(halves).flip(-2).view(x.sizes());
}

// x * cos + rotate_half(x) * sin as x * cos + swap_halves(x) * sin_signed, where
// sin_signed = [-sin, sin] (the two halves of cos/sin are equal: emb = cat(freqs, freqs)).
// Backward: g * cos + swap_halves(g * sin_signed) = g * cos - swap_halves(g) * sin_signed. One node,
// three kernels each way.
struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& cos,
                        const Tensor& sin_signed) {
    ctx->save_for_backward({cos, sin_signed});
    return torch::addcmul(x * cos, swap_halves(x), sin_signed);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];
    return {torch::addcmul(g * saved[0], swap_halves(g), saved[1], -1), Tensor(), Tensor()};
  }
};

Tensor apply_rope(const Tensor& x, const Tensor& cos, const Tensor& sin) { return RopeFunction::apply(x, cos, sin); }

Tensor layer_forward(const CausalLMImpl::Layer& L, const ModelConfig& c, const Tensor& x, const LayerInputs& in) {
  const auto dtype = x.scalar_type();
  const auto w = [&](const Tensor& t) { return t.scalar_type() == dtype ? t : t.to(dtype); };
  const int64_t B = x.size(0), T = x.size(1), H = c.num_attention_heads, KV = c.num_key_value_heads, D = c.head_dim;
  const bool olmo = c.family == Family::olmo;
  const double eps = c.rms_norm_eps;

  const Tensor attn_in = olmo ? x : rms_norm(x, L.input_norm, eps, false);
  const Tensor qkv = project(attn_in, w(L.qkv_weight), L.qkv_bias.defined() ? w(L.qkv_bias) : Tensor());
  // split (one autograd node whose backward is one cat), not narrow (a zero-filled full-size
  // gradient per piece, then their sum).
  const auto qk_v = qkv.split_with_sizes({(H + KV) * D, KV * D}, -1);
  // q and k travel together as [B, T, H+KV, D] through the norm (Qwen3) and RoPE: one node each.
  Tensor qk = qk_v[0];
  if (olmo) {
    const auto q_k = qk.split_with_sizes({H * D, KV * D}, -1);
    qk = torch::cat({rms_norm(q_k[0], L.q_norm, eps, true), rms_norm(q_k[1], L.k_norm, eps, true)}, -1);
  }
  qk = qk.view({B, T, H + KV, D});
  if (c.family == Family::qwen3) {
    const Tensor weight = torch::cat({L.q_norm.expand({H, D}), L.k_norm.expand({KV, D})}, 0);
    qk = rms_norm(qk, weight, eps, false);
  }
  qk = apply_rope(qk, in.tables.cos, in.tables.sin);
  const auto q_k = qk.split_with_sizes({H, KV}, 2);
  const Tensor q = q_k[0].transpose(1, 2);
  Tensor k = q_k[1].transpose(1, 2);
  Tensor v = qk_v[1].view({B, T, KV, D}).transpose(1, 2);
  bool causal_dense = in.causal_dense;
  if (in.cache) {
    auto& keys = in.cache->keys[in.layer_index];
    auto& values = in.cache->values[in.layer_index];
    keys.narrow(2, in.start, T).copy_(k);
    values.narrow(2, in.start, T).copy_(v);
    k = keys.narrow(2, 0, in.start + T);
    v = values.narrow(2, 0, in.start + T);
  }
  const PositionTables& t = in.tables;
  const bool sliding = L.sliding && t.allowed_sliding.defined();
  if (sliding) causal_dense = false;
  const Tensor attn = attention_core(q, k, v, sliding ? t.allowed_sliding : t.allowed,
                                     sliding ? t.additive_sliding : t.additive, causal_dense)
                          .transpose(1, 2)
                          .reshape({B, T, H * D});
  Tensor attn_out = project(attn, w(L.o_weight));

  Tensor h;
  if (olmo) {
    h = x + rms_norm(attn_out, L.post_attn_norm, eps, true);
  } else {
    h = x + attn_out;
  }
  const Tensor mlp_in = olmo ? h : rms_norm(h, L.post_attn_norm, eps, false);
  const auto gate_up = project(mlp_in, w(L.gate_up_weight)).chunk(2, -1);
  const Tensor act = torch::silu(gate_up[0]) * gate_up[1];
  const Tensor mlp_out = project(act, w(L.down_weight));
  return olmo ? h + rms_norm(mlp_out, L.post_mlp_norm, eps, true) : h + mlp_out;
}

// Gradient checkpointing: forward without storing activations; backward recomputes the layer with
// grad enabled and backpropagates through it (parameter gradients accumulate into .grad).
//
// What the recomputation needs besides the layer's input travels in the autograd context as one
// ref-counted object (an IValue capsule): the node shares ownership of the layer's weights and
// keeps its own copies of the config and tables, so nothing it points to can go away before
// backward runs.
struct CheckpointState : torch::CustomClassHolder {
  std::shared_ptr<const CausalLMImpl::Layer> layer;
  ModelConfig config;
  LayerInputs inputs;  // never a cache: layers are checkpointed only without one
};

struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, Tensor x, c10::intrusive_ptr<CheckpointState> state) {
    ctx->save_for_backward({x});
    Tensor out = layer_forward(*state->layer, state->config, x, state->inputs);
    ctx->saved_data["state"] = c10::IValue::make_capsule(std::move(state));
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto state = c10::dynamic_intrusive_pointer_cast<CheckpointState>(ctx->saved_data["state"].toCapsule());
    TORCH_CHECK(state, "checkpointed layer: its saved state is missing");
    Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    Tensor out;
    {
      torch::AutoGradMode enable(true);
      out = layer_forward(*state->layer, state->config, x, state->inputs);
    }
    torch::autograd::backward({out}, {grads[0]});
    return {x.grad(), Tensor()};
  }
};

Tensor checkpointed_layer_forward(const std::shared_ptr<CausalLMImpl::Layer>& layer, const ModelConfig& config,
                                  const Tensor& x, const LayerInputs& inputs) {
  TORCH_CHECK(inputs.cache == nullptr, "gradient checkpointing runs without a KV cache");
  auto state = c10::make_intrusive<CheckpointState>();
  state->layer = layer;
  state->config = config;
  state->inputs = inputs;
  return CheckpointedLayer::apply(x, std::move(state));
}

// --- the pieces of hidden_states

// Shapes, cache fit, and the batch size the cache was allocated for; throws std::invalid_argument.
void check_forward_arguments(const Tensor& input_ids, const Tensor& attention_mask, const KVCache* cache,
                             std::size_t layers) {
  if (input_ids.dim() != 2) throw std::invalid_argument("input_ids must be [batch, time]");
  if (!attention_mask.defined() || attention_mask.sizes() != input_ids.sizes())
    throw std::invalid_argument("attention_mask must have the shape of input_ids");
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  if (B == 0 || T == 0) throw std::invalid_argument("input_ids must not be empty");
  if (!cache) return;
  if (cache->keys.size() != layers || cache->attention_mask.size(0) != B)
    throw std::invalid_argument("KV cache was allocated for another model or batch size");
  if (cache->length + T > cache->capacity)
    throw std::invalid_argument("KV cache full: " + std::to_string(cache->length) + " + " + std::to_string(T) +
                                " > capacity " + std::to_string(cache->capacity));
}

// Checks every id is in [0, vocab_size) and returns whether no position (new or cached) is
// padding, with one device-to-host transfer for both.
bool ids_in_range_and_unpadded(const Tensor& ids, const Tensor& mask, const KVCache* cache, int64_t vocab_size) {
  const int64_t start = cache ? cache->length : 0;
  std::vector<Tensor> checks = {ids.min(), ids.max(), mask.min()};
  if (start > 0) checks.push_back(cache->attention_mask.narrow(1, 0, start).min());
  const auto values = torch::stack(checks).cpu();
  const auto* v = values.data_ptr<int64_t>();  // a CPU copy
  if (v[0] < 0 || v[1] >= vocab_size)
    throw std::invalid_argument("input_ids hold a token id outside [0, vocab_size=" + std::to_string(vocab_size) + ")");
  return v[2] == 1 && (start == 0 || v[3] == 1);
}

// LibTorch 1.x: additive 0/-inf form of `allowed` [B,1,1,T,S] for grouped scores; one shared row
// block when every row of the batch has the same mask (no padding). LibTorch 2: nothing to add.
void add_additive_masks(PositionTables& t, const ModelConfig& c, bool rows_identical, torch::Dtype dtype) {
#if TORCH_VERSION_MAJOR < 2
  const int64_t kv = c.num_key_value_heads, rep = c.num_attention_heads / kv;
  t.additive = additive_mask(t.allowed, kv, rep, rows_identical, dtype);
  if (t.allowed_sliding.defined()) t.additive_sliding = additive_mask(t.allowed_sliding, kv, rep, rows_identical, dtype);
#else
  (void)t, (void)c, (void)rows_identical, (void)dtype;
#endif
}

// positions [rows, T]: the RoPE position of each query; key_mask [rows, S]: 1 for a real key.
PositionTables position_tables(const ModelConfig& c, const Tensor& inv_freq, const Tensor& positions,
                               const Tensor& key_mask, int64_t start, bool rows_identical, torch::Dtype dtype) {
  const int64_t rows = positions.size(0), T = positions.size(1), S = start + T;
  PositionTables t;
  const Tensor freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;  // [rows, T, D/2]
  t.cos = torch::cat({freqs, freqs}, -1).cos().unsqueeze(2).to(dtype);         // [rows, T, 1, D]
  const Tensor sin = freqs.sin();
  t.sin = torch::cat({-sin, sin}, -1).unsqueeze(2).to(dtype);
  const auto long_options = torch::TensorOptions().device(positions.device()).dtype(torch::kLong);
  const Tensor query_index = torch::arange(start, S, long_options).view({T, 1});
  const Tensor key_index = torch::arange(0, S, long_options).view({1, S});
  const Tensor causal = key_index <= query_index;  // [T, S]
  const Tensor diagonal = key_index == query_index;
  // Padding queries attend to themselves so no row is empty (their outputs are never used).
  t.allowed = causal.logical_and(key_mask.to(torch::kBool).view({rows, 1, S})).logical_or(diagonal).view({rows, 1, 1, T, S});
  if (c.sliding_window > 0 && !c.sliding_layers.empty())
    t.allowed_sliding = t.allowed.logical_and((key_index > query_index - c.sliding_window).view({1, 1, 1, T, S}));
  add_additive_masks(t, c, rows_identical, dtype);
  return t;
}

// Unpadded and uncached (training, scoring): positions 0..T-1 in every row, so the tables depend
// on (T, device, dtype) only and are reused from the previous such call.
PositionTables unpadded_tables(CausalLMImpl::StaticInputs& reuse, const ModelConfig& c, const Tensor& inv_freq,
                               int64_t T, torch::Dtype dtype) {
  std::lock_guard<std::mutex> lock(reuse.mutex);
  const auto device = inv_freq.device();
  const Tensor& cos = reuse.tables.cos;
  if (cos.defined() && reuse.length == T && cos.device() == device && cos.scalar_type() == dtype) return reuse.tables;
  // Normal tensors even when this call runs under InferenceMode, so that a later training forward
  // may save them for backward.
  c10::InferenceMode normal_tensors(false);
  const auto long_options = torch::TensorOptions().device(device).dtype(torch::kLong);
  reuse.tables = position_tables(c, inv_freq, torch::arange(0, T, long_options).view({1, T}),
                                 torch::ones({1, T}, long_options), /*start=*/0, /*rows_identical=*/true, dtype);
  reuse.length = T;
  return reuse.tables;
}

// Padded or cached: each row's RoPE positions count its real tokens (after the ones already in
// the cache) and its keys are its real positions. Appends the new mask and positions to the cache.
PositionTables per_row_tables(const ModelConfig& c, const Tensor& inv_freq, const Tensor& mask, KVCache* cache,
                              bool no_padding, torch::Dtype dtype) {
  const int64_t start = cache ? cache->length : 0, T = mask.size(1);
  Tensor key_mask = mask, positions = mask.cumsum(1) - 1;
  if (cache) {
    cache->attention_mask.narrow(1, start, T).copy_(mask);
    key_mask = cache->attention_mask.narrow(1, 0, start + T);
    positions = positions + cache->next_position.unsqueeze(1);
    cache->next_position += mask.sum(1);
  }
  return position_tables(c, inv_freq, positions.clamp_min(0), key_mask, start, no_padding, dtype);
}

}  // namespace

CausalLMImpl::CausalLMImpl(ModelConfig config, torch::TensorOptions options) : config_(std::move(config)) {
  config_.validate();
  const auto& c = config_;
  const int64_t H = c.hidden_size, D = c.head_dim, QH = c.num_attention_heads, KV = c.num_key_value_heads;
  const auto empty = [&](std::vector<int64_t> shape) { return torch::empty(shape, options); };
  embed_tokens_ = register_parameter("embed_tokens", empty({c.vocab_size, H}));
  if (!c.tie_word_embeddings) lm_head_ = register_parameter("lm_head", empty({c.vocab_size, H}));
  final_norm_ = register_parameter("norm", empty({H}));
  rope_inv_freq_ = register_buffer("rope_inv_freq", rope_inverse_frequencies(c).to(options.device()));
  static_inputs_ = std::make_shared<StaticInputs>();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    auto L = std::make_shared<Layer>();
    const std::string p = "layer" + std::to_string(i) + "_";
    L->qkv_weight = register_parameter(p + "qkv_proj", empty({(QH + 2 * KV) * D, H}));
    if (c.attention_bias) L->qkv_bias = register_parameter(p + "qkv_bias", empty({(QH + 2 * KV) * D}));
    L->o_weight = register_parameter(p + "o_proj", empty({H, QH * D}));
    if (c.family == Family::qwen3) {
      L->q_norm = register_parameter(p + "q_norm", empty({D}));
      L->k_norm = register_parameter(p + "k_norm", empty({D}));
    } else if (c.family == Family::olmo) {
      L->q_norm = register_parameter(p + "q_norm", empty({QH * D}));
      L->k_norm = register_parameter(p + "k_norm", empty({KV * D}));
    }
    L->gate_up_weight = register_parameter(p + "gate_up_proj", empty({2 * c.intermediate_size, H}));
    L->down_weight = register_parameter(p + "down_proj", empty({H, c.intermediate_size}));
    if (c.family != Family::olmo) L->input_norm = register_parameter(p + "input_norm", empty({H}));
    L->post_attn_norm = register_parameter(p + "post_attention_norm", empty({H}));
    if (c.family == Family::olmo) L->post_mlp_norm = register_parameter(p + "post_feedforward_norm", empty({H}));
    L->sliding = !c.sliding_layers.empty() && c.sliding_layers[i] && c.sliding_window > 0;
    layers_.push_back(std::move(L));
  }
}

torch::Tensor CausalLMImpl::lm_head_weight() { return config_.tie_word_embeddings ? embed_tokens_ : lm_head_; }

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden) {
  const Tensor w = lm_head_weight();
  return project(hidden, w.scalar_type() == hidden.scalar_type() ? w : w.to(hidden.scalar_type()));
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  return logits(hidden_states(input_ids, attention_mask));
}

torch::Tensor CausalLMImpl::hidden_states(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                          KVCache* cache) {
  check_forward_arguments(input_ids, attention_mask, cache, layers_.size());
  const auto device = embed_tokens_.device();
  const Tensor ids = input_ids.to(device, torch::kLong);
  const Tensor mask = attention_mask.to(device, torch::kLong);
  const bool no_padding = ids_in_range_and_unpadded(ids, mask, cache, config_.vocab_size);
  const auto dtype = compute_dtype_.value_or(embed_tokens_.scalar_type());

  LayerInputs in;
  in.cache = cache;
  in.start = cache ? cache->length : 0;
  in.causal_dense = cache == nullptr && no_padding;
  in.tables = in.causal_dense ? unpadded_tables(*static_inputs_, config_, rope_inv_freq_, ids.size(1), dtype)
                              : per_row_tables(config_, rope_inv_freq_, mask, cache, no_padding, dtype);

  Tensor x = F::embedding(ids, embed_tokens_);
  if (x.scalar_type() != dtype) x = x.to(dtype);
  const bool checkpoint = gradient_checkpointing_ && cache == nullptr && torch::GradMode::is_enabled();
  for (size_t i = 0; i < layers_.size(); ++i) {
    in.layer_index = static_cast<int64_t>(i);
    x = checkpoint ? checkpointed_layer_forward(layers_[i], config_, x, in) : layer_forward(*layers_[i], config_, x, in);
  }
  if (cache) cache->length = in.start + ids.size(1);
  return rms_norm(x, final_norm_, config_.rms_norm_eps, config_.family == Family::olmo);
}

// ---------------------------------------------------------------- HF names

std::vector<std::pair<std::string, torch::Tensor>> CausalLMImpl::hf_state_dict() const {
  const auto& c = config_;
  const int64_t D = c.head_dim, QD = c.num_attention_heads * D, KD = c.num_key_value_heads * D, I = c.intermediate_size;
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", embed_tokens_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& L = *layers_[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    if (L.input_norm.defined()) out.emplace_back(p + "input_layernorm.weight", L.input_norm);
    out.emplace_back(p + "self_attn.q_proj.weight", L.qkv_weight.narrow(0, 0, QD));
    out.emplace_back(p + "self_attn.k_proj.weight", L.qkv_weight.narrow(0, QD, KD));
    out.emplace_back(p + "self_attn.v_proj.weight", L.qkv_weight.narrow(0, QD + KD, KD));
    if (L.qkv_bias.defined()) {
      out.emplace_back(p + "self_attn.q_proj.bias", L.qkv_bias.narrow(0, 0, QD));
      out.emplace_back(p + "self_attn.k_proj.bias", L.qkv_bias.narrow(0, QD, KD));
      out.emplace_back(p + "self_attn.v_proj.bias", L.qkv_bias.narrow(0, QD + KD, KD));
    }
    out.emplace_back(p + "self_attn.o_proj.weight", L.o_weight);
    if (L.q_norm.defined()) {
      out.emplace_back(p + "self_attn.q_norm.weight", L.q_norm);
      out.emplace_back(p + "self_attn.k_norm.weight", L.k_norm);
    }
    out.emplace_back(p + "post_attention_layernorm.weight", L.post_attn_norm);
    if (L.post_mlp_norm.defined()) out.emplace_back(p + "post_feedforward_layernorm.weight", L.post_mlp_norm);
    out.emplace_back(p + "mlp.gate_proj.weight", L.gate_up_weight.narrow(0, 0, I));
    out.emplace_back(p + "mlp.up_proj.weight", L.gate_up_weight.narrow(0, I, I));
    out.emplace_back(p + "mlp.down_proj.weight", L.down_weight);
  }
  out.emplace_back("model.norm.weight", final_norm_);
  if (!c.tie_word_embeddings) out.emplace_back("lm_head.weight", lm_head_);
  return out;
}

void CausalLMImpl::load_hf_tensor(const std::string& name, const torch::Tensor& value) {
  for (auto& [hf_name, target] : hf_state_dict()) {
    if (hf_name != name) continue;
    if (target.sizes() != value.sizes()) {
      std::ostringstream message;
      message << "tensor \"" << name << "\" has shape " << value.sizes() << ", the config needs " << target.sizes();
      throw std::invalid_argument(message.str());
    }
    torch::NoGradGuard no_grad;
    target.copy_(value);  // a view into the fused parameter
    return;
  }
  throw std::invalid_argument("tensor \"" + name + "\" is not a parameter of this " + config_.model_type() + " model");
}

// ---------------------------------------------------------------- construction, loading, saving

CausalLM make_random(const ModelConfig& config, uint64_t seed, torch::Device device, torch::Dtype dtype) {
  CausalLM model(config, torch::TensorOptions().dtype(torch::kFloat32));
  auto generator = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : model->hf_state_dict()) {
    if (name.find("norm") != std::string::npos) {
      tensor.fill_(1.0);
    } else if (name.size() > 5 && name.substr(name.size() - 5) == ".bias") {
      tensor.zero_();
    } else {
      tensor.normal_(0.0, 0.02, generator);
    }
  }
  model->to(device, dtype);
  return model;
}

namespace {
torch::Dtype torch_dtype_of(text::DType d, const std::string& name) {
  switch (d) {
    case text::DType::F32: return torch::kFloat32;
    case text::DType::F16: return torch::kFloat16;
    case text::DType::BF16: return torch::kBFloat16;
    case text::DType::F64: return torch::kFloat64;
    default:
      throw std::invalid_argument("tensor \"" + name + "\" has dtype " + std::string(text::dtype_name(d)) +
                                  ", which model weights cannot use");
  }
}
text::DType safetensors_dtype(torch::Dtype d) {
  if (d == torch::kFloat32) return text::DType::F32;
  if (d == torch::kBFloat16) return text::DType::BF16;
  if (d == torch::kFloat16) return text::DType::F16;
  throw std::invalid_argument("cannot save weights as " + std::string(c10::toString(d)));
}
}  // namespace

CausalLM load_pretrained(const std::filesystem::path& dir, torch::Device device, torch::Dtype dtype) {
  const ModelConfig config = ModelConfig::from_file(dir / "config.json");
  const auto checkpoint = text::SafetensorsCheckpoint::open(dir);
  CausalLM model(config, torch::TensorOptions().device(device).dtype(dtype));
  std::set<std::string> expected;
  for (const auto& [name, _] : model->hf_state_dict()) expected.insert(name);
  for (const auto& name : checkpoint.names()) {
    if (name == "lm_head.weight" && config.tie_word_embeddings) continue;  // same as the embedding
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // recomputed from config
    if (!expected.count(name))
      throw std::invalid_argument(dir.string() + ": unexpected tensor \"" + name + "\" for a " + config.model_type() +
                                  " model with this config");
    const auto& view = checkpoint.tensor(name);
    const auto source = torch::from_blob(const_cast<std::byte*>(view.data.data()), view.shape,
                                         torch::TensorOptions().dtype(torch_dtype_of(view.dtype, name)));
    model->load_hf_tensor(name, source.to(device, dtype));
    expected.erase(name);
  }
  if (!expected.empty())
    throw std::invalid_argument(dir.string() + ": checkpoint lacks tensor \"" + *expected.begin() + "\" (and " +
                                std::to_string(expected.size() - 1) + " more)");
  return model;
}

void save_pretrained(const CausalLM& model, const std::filesystem::path& dir, torch::Dtype dtype,
                     const std::optional<std::filesystem::path>& tokenizer_dir, size_t max_shard_bytes) {
  std::filesystem::create_directories(dir);
  ModelConfig config = model->config();
  config.torch_dtype = dtype_name(dtype);
  std::vector<Tensor> host;  // keeps the CPU copies alive while writing
  std::vector<text::TensorToWrite> tensors;
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, tensor] : model->hf_state_dict()) {
      host.push_back(tensor.detach().to(torch::kCPU, dtype).contiguous());
      const auto& t = host.back();
      tensors.push_back({name, safetensors_dtype(dtype), t.sizes().vec(),
                         std::span<const std::byte>(static_cast<const std::byte*>(t.data_ptr()), t.nbytes())});
    }
  }
  text::write_safetensors_checkpoint(dir, tensors, max_shard_bytes, {{"format", "pt"}});
  {
    std::ofstream out(dir / "config.json", std::ios::trunc);
    out << config.to_json().dump(2) << '\n';
    if (!out) throw std::runtime_error("cannot write " + (dir / "config.json").string());
  }
  if (tokenizer_dir && std::filesystem::weakly_canonical(*tokenizer_dir) != std::filesystem::weakly_canonical(dir)) {
    for (const char* file : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "vocab.json",
                             "merges.txt", "special_tokens_map.json"}) {
      const auto source = *tokenizer_dir / file;
      if (std::filesystem::exists(source))
        std::filesystem::copy_file(source, dir / file, std::filesystem::copy_options::overwrite_existing);
    }
  }
}

// ---------------------------------------------------------------- CPU projection kernel

bool onednn_linear_available() {
#if AT_MKLDNN_ENABLED()
  return at::hasMKLDNN() && !at::hasMKL();
#else
  return false;
#endif
}

KernelTiming calibrate_linear_kernel(int64_t rows, int64_t in, int64_t out, int repetitions) {
  KernelTiming timing;
  if (!onednn_linear_available()) return timing;
#if AT_MKLDNN_ENABLED()
  c10::InferenceMode no_autograd;
  auto generator = at::detail::createCPUGenerator(20261203);
  const auto options = torch::TensorOptions().dtype(torch::kFloat32);
  const Tensor x = at::randn({rows, in}, generator, options), g = at::randn({rows, out}, generator, options);
  const Tensor w = at::randn({out, in}, generator, options).mul_(0.05);
  // What each path's autograd runs: forward, then dX and dW.
  const auto blas = [&] {
    (void)at::linear(x, w);
    (void)at::mm(g, w);
    (void)at::mm(g.t(), x);
  };
  const auto onednn = [&] {
    (void)onednn_matmul_t(x, w);
    (void)onednn_matmul_t(g, w.t());
    (void)onednn_matmul_t(g.t(), x.t());
  };
  const auto seconds = [](const auto& run) {
    const auto start = std::chrono::steady_clock::now();
    run();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  blas();  // warm-up: oneDNN's JIT kernels and primitive cache, BLAS buffers
  onednn();
  std::vector<double> blas_times, onednn_times;
  double spent = 0;
  for (int r = 0; r < std::max(1, repetitions) || (spent < 0.05 && r < 25); ++r) {  // alternating: same load for both
    const bool blas_first = r % 2 == 0;
    const double first = seconds([&] { blas_first ? blas() : onednn(); });
    const double second = seconds([&] { blas_first ? onednn() : blas(); });
    blas_times.push_back(blas_first ? first : second);
    onednn_times.push_back(blas_first ? second : first);
    spent += first + second;
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  timing.blas_seconds = median(blas_times);
  timing.onednn_seconds = median(onednn_times);
  timing.kernel = timing.onednn_seconds < timing.blas_seconds ? LinearKernel::onednn : LinearKernel::blas;
#else
  (void)rows, (void)in, (void)out, (void)repetitions;
#endif
  return timing;
}

namespace {

void log_line(const std::string& message) { std::fprintf(stderr, "distil: %s\n", message.c_str()); }

// The choice at one thread count: forced, or per shape with its cache file.
struct ThreadChoice {
  LinearKernelChoice choice;
  std::optional<std::filesystem::path> file;
  int threads = 1;
};

struct KernelState {
  std::mutex mutex;
  std::optional<LinearKernel> set_in_process;
  std::map<std::pair<int, int>, ThreadChoice> by_threads;  // (intra-op, BLAS) threads -> choice
};
KernelState& kernel_state() {
  static KernelState state;
  return state;
}

ThreadChoice start_choice(int threads, int blas_threads) {
  ThreadChoice t;
  t.threads = threads;
  auto& choice = t.choice;
  if (!onednn_linear_available()) {
    choice.forced = LinearKernel::blas;
    choice.source = "oneDNN unavailable";
    return t;
  }
  const GetEnv env = [](const char* name) { return static_cast<const char*>(std::getenv(name)); };
  std::string warning;
  const auto forced = forced_linear_kernel(env, &warning);
  if (!warning.empty()) log_line(warning);
  if (forced) {
    choice.forced = forced->kernel;
    choice.source = "forced: " + forced->reason;
    return t;
  }
  choice.key = kernel_cache_key(
      {common::this_cpu(), TORCH_VERSION, threads, blas_threads, kernel_env_of(env), freed_cpu_memory_kept()});
  t.file = kernel_cache_path(env);
  choice.source = t.file ? "per shape, cache " + t.file->string() : std::string("per shape, no cache");
  if (t.file) {
    std::string note;
    choice.shapes = read_kernel_cache(*t.file, choice.key, &note);
    if (!note.empty()) log_line("kernel cache: " + note);
  }
  return t;
}

ThreadChoice& thread_choice(KernelState& state) {
  const int threads = at::get_num_threads(), blas_threads = openblas_get_num_threads ? openblas_get_num_threads() : 0;
  auto it = state.by_threads.find({threads, blas_threads});
  if (it == state.by_threads.end())
    it = state.by_threads.emplace(std::make_pair(threads, blas_threads), start_choice(threads, blas_threads)).first;
  return it->second;
}

LinearKernel current_linear_kernel(int64_t rows, int64_t in, int64_t out) {
  auto& state = kernel_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (state.set_in_process) return *state.set_in_process;
  auto& t = thread_choice(state);
  if (t.choice.forced) return *t.choice.forced;
  const int64_t r = calibration_rows(rows);
  const std::string shape = shape_name(r, in, out);
  if (auto it = t.choice.shapes.find(shape); it != t.choice.shapes.end()) return it->second.kernel;
  const KernelTiming timing = calibrate_linear_kernel(r, in, out);
  t.choice.shapes[shape] = timing;
  char line[256];
  std::snprintf(line, sizeof line, "CPU linear kernel for %s (rows x in x out) at %d thread%s: %s (blas %.3f ms, onednn %.3f ms fwd+bwd)",
                shape.c_str(), t.threads, t.threads == 1 ? "" : "s", linear_kernel_name(timing.kernel),
                timing.blas_seconds * 1e3, timing.onednn_seconds * 1e3);
  std::string message = line;
  if (t.file) {
    std::string error;
    if (write_kernel_cache(*t.file, t.choice.key, {{shape, timing}}, &error)) message += "; cached";
    else message += "; not cached (" + error + ")";
  }
  log_line(message);
  return timing.kernel;
}

}  // namespace

LinearKernelChoice cpu_linear_kernel() {
  auto& state = kernel_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (state.set_in_process) return {*state.set_in_process, "set in process", {}, {}};
  return thread_choice(state).choice;
}

LinearKernel cpu_linear_kernel_for(int64_t rows, int64_t in, int64_t out) { return current_linear_kernel(rows, in, out); }

void set_cpu_linear_kernel(std::optional<LinearKernel> kernel) {
  auto& state = kernel_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  state.set_in_process = kernel;
}

}  // namespace distil::model
