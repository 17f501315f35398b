// Decoder-only causal language models from Hugging Face directories: Qwen3, Llama 3, OLMo 2/3.
// One decoder implementation with family switches (q/k RMSNorm, norm placement, RoPE scaling).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "trainer/model/linear_kernel.h"

namespace distil::model {

// olmo: OLMo 2 and OLMo 3, one architecture (model_type "olmo2" / "olmo3"); OLMo 3 adds the
// sliding-window layers of ModelConfig::sliding_layers.
enum class Family { qwen3, llama, olmo };

struct RopeScaling {  // Llama 3 ("rope_type": "llama3"); type "" = none
  std::string type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Family family = Family::qwen3;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // 0 in config.json -> hidden_size / num_attention_heads
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 4096;
  bool attention_bias = false;  // q/k/v biases (Qwen2-style checkpoints)
  // OLMo 3: layers marked true attend to the last `sliding_window` positions only.
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;
  std::string torch_dtype = "float32";  // as written in config.json
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;

  // Parses config.json ("model_type": qwen3 | llama | olmo2 | olmo3); every missing or invalid
  // field is reported as std::invalid_argument naming the field.
  static ModelConfig from_json(const nlohmann::json& config);
  static ModelConfig from_file(const std::filesystem::path& config_json);
  nlohmann::json to_json() const;  // HF config.json, loadable by transformers
  void validate() const;           // throws std::invalid_argument naming the field
  std::string model_type() const;  // "qwen3" | "llama" | "olmo2" | "olmo3" (olmo with sliding layers)
};

// Per-layer keys/values preallocated for `capacity` positions, plus the attention mask and the
// next RoPE position of each row. Filled by CausalLMImpl::hidden_states.
struct KVCache {
  std::vector<torch::Tensor> keys, values;  // [B, kv_heads, capacity, head_dim] each layer
  torch::Tensor attention_mask;             // [B, capacity] (1 real, 0 padding / unused)
  torch::Tensor next_position;              // [B] int64: RoPE position of the next real token
  int64_t length = 0;                       // positions filled so far
  int64_t capacity = 0;

  static KVCache allocate(const ModelConfig& config, int64_t batch, int64_t capacity, torch::Device device,
                          torch::Dtype dtype);
  // Keeps only the given rows (e.g. finished sequences dropped).
  void select_rows(const torch::Tensor& rows);
};

class CausalLMImpl : public torch::nn::Module {
 public:
  // Parameters are allocated (uninitialised) with `options` (device, dtype); see make_random and
  // load_pretrained for initialised models.
  explicit CausalLMImpl(ModelConfig config, torch::TensorOptions options = torch::TensorOptions(torch::kFloat32));

  // input_ids [B,T] int64, attention_mask [B,T] (1 real, 0 left padding; any integer/bool dtype).
  // With a cache, the T new positions are appended after cache->length (throws if full).
  // Returns the final-norm hidden states [B,T,H] in the compute dtype.
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                              KVCache* cache = nullptr);
  // lm_head (tied to the embedding when tie_word_embeddings): [..., H] -> [..., V].
  torch::Tensor logits(const torch::Tensor& hidden);
  torch::Tensor lm_head_weight();  // [V, H]
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);

  const ModelConfig& config() const { return config_; }
  // Recompute each layer in backward instead of storing its activations.
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  bool gradient_checkpointing() const { return gradient_checkpointing_; }
  // Mixed precision: parameters stay in their dtype (e.g. fp32 master weights), matmuls and
  // activations run in `dtype` (e.g. kBFloat16 on GPU). nullopt = the parameters' dtype.
  void set_compute_dtype(std::optional<torch::Dtype> dtype) { compute_dtype_ = dtype; }
  std::optional<torch::Dtype> compute_dtype() const { return compute_dtype_; }

  // Parameters under their Hugging Face names ("model.layers.0.self_attn.q_proj.weight", ...).
  // The fused q/k/v and gate/up weights are split into HF tensors (copies), so use this for
  // saving, and named_parameters() for optimisers.
  std::vector<std::pair<std::string, torch::Tensor>> hf_state_dict() const;
  // Copies HF-named tensors in (fusing q/k/v and gate/up); throws std::invalid_argument naming a
  // missing tensor or a shape mismatch.
  void load_hf_tensor(const std::string& name, const torch::Tensor& value);

  struct Layer;
  struct StaticInputs;  // RoPE tables and masks of an unpadded, uncached forward, per length

 private:
  ModelConfig config_;
  torch::Tensor embed_tokens_;   // [V, H]
  torch::Tensor lm_head_;        // [V, H] or undefined when tied
  torch::Tensor final_norm_;     // [H]
  torch::Tensor rope_inv_freq_;  // [head_dim/2] fp32 buffer
  std::vector<std::shared_ptr<Layer>> layers_;
  std::shared_ptr<StaticInputs> static_inputs_;  // last (T, device, dtype) used without padding
  bool gradient_checkpointing_ = false;
  std::optional<torch::Dtype> compute_dtype_;
};
TORCH_MODULE(CausalLM);

// A new model with deterministic random weights (normal std 0.02, norms 1), e.g. for the demo.
CausalLM make_random(const ModelConfig& config, uint64_t seed, torch::Device device = torch::kCPU,
                     torch::Dtype dtype = torch::kFloat32);

// Loads DIR/config.json and the safetensors checkpoint (single or sharded) onto `device` in
// `dtype`. Every parameter must be present (a tied lm_head may be absent or equal).
CausalLM load_pretrained(const std::filesystem::path& dir, torch::Device device = torch::kCPU,
                         torch::Dtype dtype = torch::kFloat32);

// Writes DIR/config.json (torch_dtype = dtype) and the safetensors checkpoint in `dtype`
// (sharded above max_shard_bytes). When tokenizer_dir is given, its tokenizer.json,
// tokenizer_config.json, generation_config.json, vocab/merges files are copied too.
void save_pretrained(const CausalLM& model, const std::filesystem::path& dir, torch::Dtype dtype = torch::kFloat32,
                     const std::optional<std::filesystem::path>& tokenizer_dir = std::nullopt,
                     size_t max_shard_bytes = size_t{5} << 30);

// ---------------------------------------------------------------- CPU projection kernel

// True when fp32 CPU projections can go through oneDNN: LibTorch has oneDNN and no MKL (with MKL,
// as in PyTorch's wheels, at::linear is already MKL's and nothing changes).
bool onednn_linear_available();

// How fp32 CPU projections of at least 2^19 multiply-adds per call choose their kernel, decided
// once per thread count in a process: forced by the environment (linear_kernel.h), or per shape
// (calibration_rows(rows) x in x out): read from the per-machine cache, else measured the first
// time the shape is seen (calibrate_linear_kernel, a few ms to a few hundred ms per shape) and
// written to the cache (a failed write is logged, never thrown). Never measures in reproducible
// mode, which forces blas. Thread-safe.
struct LinearKernelChoice {
  std::optional<LinearKernel> forced;  // one kernel for every shape
  std::string source;                  // "forced: DISTIL_BLAS_LINEAR=1", "set in process", "oneDNN unavailable",
                                       // "per shape, cache FILE", "per shape, no cache"
  ShapeTimings shapes;                 // shapes decided so far (from the cache or measured in this process)
  std::string key;                     // the cache key (empty when forced)
};
LinearKernelChoice cpu_linear_kernel();
// The kernel a projection of this shape uses now (measures it if it must).
LinearKernel cpu_linear_kernel_for(int64_t rows, int64_t in, int64_t out);
// Forces a kernel for this process (tests, benchmarks); nullopt returns to the automatic choice.
void set_cpu_linear_kernel(std::optional<LinearKernel> kernel);

// Times forward + backward (y = x W^T, dX = dY W, dW = dY^T X) of one projection shape with both
// kernels at the current thread count: a warm-up, then alternating rounds (at least
// `repetitions`, more while under ~50 ms in all), each kernel's median. The faster is `kernel`
// (blas when oneDNN is unavailable). Uses its own generator, not the global RNG.
KernelTiming calibrate_linear_kernel(int64_t rows, int64_t in, int64_t out, int repetitions = 5);

// "float32" | "bfloat16" | "float16" <-> torch dtype; throws std::invalid_argument.
torch::Dtype dtype_from_name(const std::string& name);
std::string dtype_name(torch::Dtype dtype);

}  // namespace distil::model
