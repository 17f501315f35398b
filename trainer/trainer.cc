#include "trainer/trainer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>
#if defined(DISTIL_WITH_CUDA) && __has_include(<ATen/cuda/CUDAContext.h>)
#define DISTIL_CUDA_PROPERTIES 1
#include <ATen/cuda/CUDAContext.h>
#endif

#include "common/timestamp.h"
#include "env_server/client/feedback_client.h"
#include "trainer/distributed.h"
#include "trainer/evaluate.h"
#include "trainer/memory_plan.h"
#include "trainer/metrics.h"
#include "trainer/model/generate.h"
#include "trainer/rollout.h"
#include "trainer/scoring.h"
#include "trainer/teacher.h"
#include "trainer/text/tokenizer.h"

namespace distil::trainer {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One timestamped line on stderr, in spdlog's default layout. The trainer does not use spdlog
// itself: LibTorch 2.x ships its own fmt headers, which shadow the system fmt that the
// distribution's spdlog was built against.
void log_event(const char* level, const std::string& message) {
  const std::string stamp = common::timestamp_now(common::TimestampStyle::log_local);
  std::fprintf(stderr, "[%s] [%s] %s\n", stamp.c_str(), level, message.c_str());
}

// A deterministic seed from a few counters (splitmix64 mixing). Rollouts are seeded per sample
// from (seed, step, accumulation batch, global prompt position, sample), never by rank: N
// processes draw what one process would, and a resumed run draws the same samples.
uint64_t mix_seed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x9e3779b97f4a7c15ULL;
  for (uint64_t p : parts) {
    h ^= p + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h += 0x9e3779b97f4a7c15ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    h ^= h >> 31;
  }
  return h;
}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::max(0.0, seconds));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
  return buf;
}

// Parts that are sums over the batch (already divided by the global normaliser); the others are
// per-token or per-sequence averages and are combined weighted by tokens.
bool is_additive_part(const std::string& key) {
  static const std::set<std::string> additive = {"local", "future_credit", "jsd", "nll", "policy",
                                                 "active_sequences"};
  return additive.count(key) > 0;
}

// fsync one file (O_RDONLY) or directory (O_RDONLY | O_DIRECTORY).
void fsync_path(const fs::path& p, int flags) {
  const int fd = open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("open " + p.string() + " to fsync: " + std::strerror(errno));
  const int rc = fsync(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) throw std::runtime_error("fsync " + p.string() + ": " + std::strerror(err));
}

// fsync every file and directory under `root` (and `root`): a checkpoint renamed into place must
// also survive a power loss, so its contents reach the disk before the rename that publishes it.
void fsync_tree(const fs::path& root) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) fsync_path(entry.path(), O_RDONLY);
    else if (entry.is_directory()) fsync_path(entry.path(), O_RDONLY | O_DIRECTORY);
  }
  fsync_path(root, O_RDONLY | O_DIRECTORY);
}

// After a resume from the checkpoint of step `step`: the records of later steps (made again now)
// are dropped, so each step appears once and sums and plots stay right. Written whole to a
// temporary file, then renamed over the old one.
void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  const fs::path tmp = path.string() + ".tmp";
  std::ofstream out(tmp, std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + tmp.string());
  int64_t dropped = 0;
  for (std::string line; std::getline(in, line);) {
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (record.is_object() && record.contains("step") && record["step"].is_number_integer() &&
        record["step"].get<int64_t>() > step) {
      ++dropped;
      continue;
    }
    out << line << '\n';
  }
  out.close();
  if (!out) throw std::runtime_error("cannot write " + tmp.string());
  fs::rename(tmp, path);
  if (dropped > 0)
    log_event("info", "metrics.jsonl: dropped " + std::to_string(dropped) + " records of steps after " +
                          std::to_string(step) + " (they are made again from the checkpoint)");
}

// Every teacher context kind, in the order metrics.jsonl lists them.
constexpr std::array<ContextKind, 5> kContextKinds{ContextKind::sibling, ContextKind::feedback, ContextKind::reference,
                                                   ContextKind::own_response, ContextKind::masked};

struct Batch {
  std::vector<Rollout> rollouts;  // graded rollouts only, ordered by group
  std::vector<std::size_t> task_of_group;
  std::vector<int64_t> position_of_group;  // global prompt position (the data cursor) of each group
  int64_t first_group = 0;                 // this rank's first group within the global batch
  int64_t generated = 0, failed_feedback = 0, empty_responses = 0;
  std::string first_feedback_error;
  double time_generation = 0, time_feedback = 0;
};

}  // namespace

struct Trainer::Impl {
  TrainConfig config;
  DistributedEnv dist;
  std::unique_ptr<Communicator> comm;
  torch::Device device = torch::kCPU;
  fs::path output_dir;
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::unique_ptr<PromptRenderer> renderer;
  model::CausalLM model{nullptr};
  model::CausalLM teacher_model{nullptr};  // ema / initial / model; null for current and remote
  std::unique_ptr<TeacherScorer> teacher;
  std::unique_ptr<Objective> objective;
  std::unique_ptr<torch::optim::AdamW> optimizer;  // distributed.zero_stage 0
  std::unique_ptr<ShardedAdamW> sharded;           // distributed.zero_stage 1 / 2
  std::vector<torch::Tensor> parameters;
  std::unique_ptr<env::FeedbackClient> client;
  std::vector<tasks::Task> train_tasks, eval_tasks;
  std::vector<std::vector<int32_t>> prompt_cache;  // encoded student prompt per train task
  MetricsWriter metrics;
  int32_t pad_id = 0;
  int32_t end_of_response_id = -1;
  std::string teacher_weights, teacher_context;

  int64_t step = 0;     // optimiser steps done
  int64_t cursor = 0;   // global prompts consumed
  int64_t updates = 0;  // optimiser updates (> step for off-policy GRPO)
  int64_t skipped = 0;  // non-finite updates skipped
  int consecutive_failed_steps = 0;  // steps in a row whose every rollout lost its feedback
  int64_t cached_epoch = -1;
  std::vector<std::size_t> epoch_order;

  bool is_main() const { return dist.rank == 0; }

  void load(const std::string& resume) {
    dist = distributed_env_from_environment();
    device = resolve_device(config.model.device, dist.local_rank);
    if (device.is_cuda()) device = torch::Device(torch::kCUDA, device.index() < 0 ? 0 : device.index());
    if (config.rollout.prompts_per_step < dist.world_size) {
      throw ConfigError("rollout.prompts_per_step", "the global batch (" + std::to_string(config.rollout.prompts_per_step) +
                                                        " prompts) must give every one of the " +
                                                        std::to_string(dist.world_size) + " ranks at least one");
    }
    comm = make_communicator(dist, device);
    {
      const char* mask = std::getenv("CUDA_VISIBLE_DEVICES");
      log_event("info", "rank " + std::to_string(dist.rank) + " of " + std::to_string(dist.world_size) + ", local rank " +
                            std::to_string(dist.local_rank) + " of " + std::to_string(dist.local_world_size) +
                            ", device " + device.str() + (device.is_cuda() && mask ? " (CUDA_VISIBLE_DEVICES=" + std::string(mask) + ")" : "") +
                            ", backend " + comm->backend() + ", zero_stage " +
                            std::to_string(config.distributed.zero_stage));
    }
    output_dir = config.train.output_dir;
    fs::create_directories(output_dir);
    objective = make_objective(config.algo.objective);
    teacher_weights = config.resolved_teacher_weights();
    teacher_context = config.resolved_teacher_context();
    if (config.algo.off_policy_minibatches > 1 && config.optim.grad_accumulation > 1) {
      throw ConfigError("algo.off_policy_minibatches",
                        "off-policy minibatch updates cannot be combined with optim.grad_accumulation > 1");
    }
    if (config.model.path.empty()) throw ConfigError("model.path", "required");

    fs::path checkpoint;
    if (!resume.empty()) {
      checkpoint = resume == "latest" ? latest_checkpoint(output_dir) : fs::path(resume);
      if (checkpoint.empty() || !fs::exists(checkpoint / "trainer_state.json")) {
        throw std::runtime_error("--resume: no checkpoint (trainer_state.json) at '" +
                                 (checkpoint.empty() ? resume : checkpoint.string()) + "'");
      }
    }
    const fs::path weights_dir = checkpoint.empty() ? fs::path(config.model.path) : checkpoint;
    tokenizer = std::make_unique<text::Tokenizer>(text::Tokenizer::from_model_dir(weights_dir));
    renderer = std::make_unique<PromptRenderer>(config.model, *tokenizer);
    pad_id = tokenizer->pad_token_id().value_or(
        tokenizer->eos_token_ids().empty() ? 0 : tokenizer->eos_token_ids().front());
    if (!tokenizer->eos_token_ids().empty()) end_of_response_id = tokenizer->eos_token_ids().front();

    train_tasks = load_task_files(config.data.train_tasks, config.data.domains, "data.train_tasks");
    if (!config.data.eval_tasks.empty()) {
      eval_tasks = load_task_files(config.data.eval_tasks, config.data.domains, "data.eval_tasks");
    }
    prompt_cache.resize(train_tasks.size());
    check_memory_plan(weights_dir);

    const auto dtype = model::dtype_from_name(config.model.dtype);
    model = model::load_pretrained(weights_dir, device, dtype);
    if (!config.model.compute_dtype.empty()) {
      model->set_compute_dtype(model::dtype_from_name(config.model.compute_dtype));
    }
    model->set_gradient_checkpointing(config.model.gradient_checkpointing);
    for (auto& p : model->parameters()) {
      if (p.requires_grad()) parameters.push_back(p);
    }
    torch::optim::AdamWOptions options(config.optim.lr);
    options.betas({config.optim.beta1, config.optim.beta2})
        .eps(config.optim.eps)
        .weight_decay(config.optim.weight_decay);
    if (config.distributed.zero_stage > 0) {
      sharded = std::make_unique<ShardedAdamW>(parameters, options, *comm, config.distributed.zero_stage);
    } else {
      optimizer = std::make_unique<torch::optim::AdamW>(parameters, options);
    }

    ScoringLimits limits{pad_id, config.optim.chunk_tokens, config.optim.micro_batch_tokens};
    if (objective->needs_teacher()) {
      if (teacher_weights == "current") {
        teacher = make_local_teacher(model, limits);
      } else if (teacher_weights == "remote") {
        teacher = make_remote_teacher(config.teacher, tokenizer->vocab_size());
      } else {
        fs::path source = teacher_weights == "model" ? fs::path(config.teacher.model_path)
                                                     : fs::path(config.model.path);
        if (teacher_weights == "ema" && !checkpoint.empty()) source = checkpoint / "teacher_ema";
        teacher_model = model::load_pretrained(source, device, dtype);
        if (!config.model.compute_dtype.empty()) {
          teacher_model->set_compute_dtype(model::dtype_from_name(config.model.compute_dtype));
        }
        for (auto& p : teacher_model->parameters()) p.set_requires_grad(false);
        if (teacher_weights == "ema" && checkpoint.empty()) teacher_model = clone_model(model);
        teacher = make_local_teacher(teacher_model, limits);
      }
    }

    const bool needs_env = objective->response_source() == ResponseSource::policy_samples;
    if (config.env.endpoints.empty() && (needs_env || !eval_tasks.empty())) {
      throw ConfigError("env.endpoints", "at least one distil-env endpoint is required");
    }
    if (!config.env.endpoints.empty()) {
      client = std::make_unique<env::FeedbackClient>(client_config(config.env));
      // A wrong URL (another web server, a typo'd port on a live host) or no answer at all stops
      // the run here, naming each endpoint, instead of training on nothing.
      client->require_endpoints();
    }

    if (!checkpoint.empty()) restore(checkpoint);
    if (is_main()) {
      // A save killed midway leaves checkpoint-N.tmp; it was never published, so it goes.
      if (fs::exists(output_dir))
        for (const auto& entry : fs::directory_iterator(output_dir)) {
          const auto name = entry.path().filename().string();
          if (entry.is_directory() && name.rfind("checkpoint-", 0) == 0 && name.size() > 4 &&
              name.compare(name.size() - 4, 4, ".tmp") == 0) {
            log_event("info", "removing " + entry.path().string() + " (a save that did not finish)");
            fs::remove_all(entry.path());
          }
        }
      std::ofstream(output_dir / "config.yaml") << config.yaml;
      if (!checkpoint.empty()) truncate_metrics(output_dir / "metrics.jsonl", step);
      TensorBoardOutput tensorboard;
      tensorboard.enabled = config.train.tensorboard;
      // The steps after the checkpoint are made again; TensorBoard hides their old points.
      if (!checkpoint.empty()) tensorboard.purge_from_step = step + 1;
      tensorboard.on_error = [](const std::string& message) { log_event("error", message); };
      metrics = MetricsWriter(output_dir / "metrics.jsonl", !checkpoint.empty(), std::move(tensorboard));
    }
  }

  // --- memory plan ------------------------------------------------------------------------------
  double memory_budget() const {
    if (config.distributed.memory_per_rank_gb > 0) return config.distributed.memory_per_rank_gb * 1e9;
#ifdef DISTIL_CUDA_PROPERTIES
    if (device.is_cuda()) return static_cast<double>(at::cuda::getDeviceProperties(device.index())->totalGlobalMem);
#endif
    if (device.is_cuda()) return 0;  // unknown in this build: no check
    const double ram = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
    return ram / std::max(1, dist.local_world_size);  // the node's processes share its RAM
  }

  // Printed by rank 0 before any weight is loaded; a run that cannot fit stops here, naming the key.
  void check_memory_plan(const fs::path& weights_dir) {
    if (config.distributed.memory_check == "off") return;
    int64_t longest_prompt = 0;
    for (std::size_t i = 0; i < std::min<std::size_t>(train_tasks.size(), 256); ++i)
      longest_prompt = std::max<int64_t>(longest_prompt, static_cast<int64_t>(prompt_tokens(i).size()));
    const bool fused = TORCH_VERSION_MAJOR >= 2 && device.is_cuda();
    const auto inputs = memory_plan_inputs(config, read_model_shape(weights_dir), dist.world_size, longest_prompt, fused);
    const double budget = memory_budget();
    if (is_main()) std::fprintf(stderr, "%s", format_memory_plan(plan_memory(inputs), inputs, budget).c_str());
    std::string key;
    const std::string shortfall = memory_shortfall(inputs, budget, key);
    if (shortfall.empty()) return;
    if (config.distributed.memory_check == "refuse") throw ConfigError(key, shortfall);
    if (is_main()) log_event("warning", shortfall);
  }

  // --- data -------------------------------------------------------------------------------------
  std::size_t task_at(int64_t global_position) {
    const int64_t n = static_cast<int64_t>(train_tasks.size());
    const int64_t epoch = global_position / n;
    if (epoch != cached_epoch) {
      epoch_order.resize(train_tasks.size());
      std::iota(epoch_order.begin(), epoch_order.end(), 0);
      std::mt19937_64 rng(mix_seed({config.data.shuffle_seed, static_cast<uint64_t>(epoch)}));
      // Fisher-Yates with our own draws: std::shuffle's use of the engine is unspecified.
      for (std::size_t i = epoch_order.size(); i > 1; --i) std::swap(epoch_order[i - 1], epoch_order[rng() % i]);
      cached_epoch = epoch;
    }
    return epoch_order[global_position % n];
  }

  const std::vector<int32_t>& prompt_tokens(std::size_t task) {
    if (prompt_cache[task].empty()) prompt_cache[task] = renderer->encode(train_tasks[task].prompt);
    return prompt_cache[task];
  }

  // --- rollouts ---------------------------------------------------------------------------------
  Batch collect(int64_t accumulation_index) {
    Batch batch;
    // rollout.prompts_per_step is the global batch; rank r takes its r-th contiguous share.
    const int global_prompts = config.rollout.prompts_per_step;
    const int64_t begin = static_cast<int64_t>(global_prompts) * dist.rank / dist.world_size;
    const int64_t end = static_cast<int64_t>(global_prompts) * (dist.rank + 1) / dist.world_size;
    const int prompts = static_cast<int>(end - begin);
    const int g = config.rollout.group_size;
    batch.first_group = begin;
    for (int64_t i = begin; i < end; ++i) {
      batch.task_of_group.push_back(task_at(cursor + i));
      batch.position_of_group.push_back(cursor + i);
    }
    cursor += global_prompts;

    std::vector<Rollout> rollouts;
    if (objective->response_source() == ResponseSource::reference_solutions) {
      for (int i = 0; i < prompts; ++i) {
        const auto& task = train_tasks[batch.task_of_group[i]];
        auto reference = reference_solution(task);
        if (!reference) continue;
        Rollout r;
        r.task_index = batch.task_of_group[i];
        r.group = i;
        r.prompt_tokens = prompt_tokens(r.task_index);
        r.response_text = *reference;
        r.response_tokens = tokenizer->encode(*reference, false);
        if (end_of_response_id >= 0) r.response_tokens.push_back(end_of_response_id);
        r.graded = r.passed = true;
        r.reward = 1.0;
        rollouts.push_back(std::move(r));
      }
      batch.generated = static_cast<int64_t>(rollouts.size());
    } else {
      auto start = Clock::now();
      std::vector<std::vector<int32_t>> prompt_rows;
      for (int i = 0; i < prompts; ++i) {
        for (int s = 0; s < g; ++s) prompt_rows.push_back(prompt_tokens(batch.task_of_group[i]));
      }
      auto params = sampling_params(config.rollout.temperature, config.rollout.top_p, config.rollout.top_k,
                                    config.rollout.max_new_tokens, config.rollout.stop_strings, config.train.seed);
      params.max_batch_rows = config.rollout.max_batch_rows;
      for (int i = 0; i < prompts; ++i) {
        for (int s = 0; s < g; ++s) {
          params.row_seeds.push_back(mix_seed({config.train.seed, static_cast<uint64_t>(step),
                                               static_cast<uint64_t>(accumulation_index),
                                               static_cast<uint64_t>(batch.position_of_group[i]), static_cast<uint64_t>(s)}));
        }
      }
      std::vector<model::GeneratedSequence> generated;
      {
        torch::NoGradGuard no_grad;
        generated = model::generate(model, *tokenizer, prompt_rows, params);
      }
      batch.time_generation = seconds_since(start);
      batch.generated = static_cast<int64_t>(generated.size());

      start = Clock::now();
      std::vector<env::FeedbackItem> items;
      for (std::size_t j = 0; j < generated.size(); ++j) {
        Rollout r;
        r.group = static_cast<int64_t>(j) / g;
        r.task_index = batch.task_of_group[r.group];
        r.prompt_tokens = prompt_rows[j];
        r.response_tokens = generated[j].tokens;
        r.response_text = generated[j].text;
        items.push_back(feedback_item(train_tasks[r.task_index], r.response_text, config.env));
        rollouts.push_back(std::move(r));
      }
      apply_feedback(rollouts, client->feedback(items));
      batch.time_feedback = seconds_since(start);
    }
    // One line per distinct problem per batch, not one per rollout (a dead endpoint fails them all).
    std::map<std::string, std::pair<int, std::string>> failures;  // error -> (count, first task)
    for (auto& r : rollouts) {
      if (!r.graded) {
        ++batch.failed_feedback;
        auto& f = failures[r.feedback_error];
        if (f.first++ == 0) f.second = train_tasks[r.task_index].id;
        if (batch.first_feedback_error.empty()) batch.first_feedback_error = r.feedback_error;
        continue;
      }
      if (r.response_tokens.empty()) {
        ++batch.empty_responses;
        continue;
      }
      batch.rollouts.push_back(std::move(r));
    }
    for (const auto& [error, seen] : failures)
      log_event("warning", "step " + std::to_string(step + 1) + ": feedback failed for " + std::to_string(seen.first) +
                               " of " + std::to_string(rollouts.size()) + " rollouts (dropped; first: task " +
                               seen.second + "): " + error);
    return batch;
  }

  // --- teacher and targets ----------------------------------------------------------------------
  struct Prepared {
    PositionTargets targets;             // all positions of all rollouts
    torch::Tensor active;                // [n_rollouts]
    torch::Tensor old_logq;              // [positions] or undefined
    std::vector<int64_t> offsets;        // first position row of each rollout
    int64_t positions = 0;
    int64_t active_positions = 0;        // positions of rollouts that take part in the loss
    int64_t masked = 0;
    std::map<std::string, int64_t> contexts;  // teacher context kind -> rollouts
    double time_teacher = 0, time_old = 0;
  };

  // What the objective needs for a batch (objectives.h), prepared in this order: the student's own
  // no-grad pass, which rollouts take part in the loss, and the teacher's targets.
  Prepared prepare(const Batch& batch) {
    Prepared p;
    const auto& rs = batch.rollouts;
    for (const auto& r : rs) {
      p.offsets.push_back(p.positions);
      p.positions += static_cast<int64_t>(r.response_tokens.size());
    }
    std::vector<int64_t> sampled;
    sampled.reserve(p.positions);
    for (const auto& r : rs) sampled.insert(sampled.end(), r.response_tokens.begin(), r.response_tokens.end());
    p.targets.sampled = torch::tensor(sampled, torch::kLong);
    p.active = torch::ones({static_cast<int64_t>(rs.size())}, torch::kFloat);

    const torch::Tensor student_topk = student_pass_without_grad(rs, p);
    if (objective->trains_on_passed_only()) {
      for (std::size_t i = 0; i < rs.size(); ++i) p.active[i] = rs[i].passed ? 1.0f : 0.0f;
      p.masked = static_cast<int64_t>(rs.size()) - static_cast<int64_t>(p.active.sum().item<double>());
      count_active_positions(rs, p);
      return p;
    }
    if (!objective->needs_teacher()) {
      p.active_positions = p.positions;
      return p;
    }
    auto start = Clock::now();
    teacher_targets(rs, teacher_messages(rs, p), student_topk, p);
    count_active_positions(rs, p);
    p.time_teacher = seconds_since(start);
    return p;
  }

  // The student's own pass without grad, when the objective needs it: old log-probs (importance
  // ratios) into p.old_logq and, when the teacher scores the student's top-k, that top-k
  // (returned; undefined otherwise).
  torch::Tensor student_pass_without_grad(const std::vector<Rollout>& rs, Prepared& p) {
    const bool on_student_topk = objective->teacher_scores_student_topk();
    const bool wanted = objective->needs_old_logq(config.algo.off_policy_minibatches) || on_student_topk;
    if (!wanted || rs.empty()) return {};
    auto start = Clock::now();
    TokenRows prompts, responses;
    for (const auto& r : rs) {
      prompts.push_back(r.prompt_tokens);
      responses.push_back(r.response_tokens);
    }
    std::vector<torch::Tensor> old, top;
    for_each_response_logprobs(model, prompts, responses, pad_id, config.optim.chunk_tokens,
                               config.optim.micro_batch_tokens, [&](const torch::Tensor& lp, int64_t first) {
                                 auto rows = p.targets.sampled.slice(0, first, first + lp.size(0)).to(lp.device());
                                 old.push_back(lp.gather(1, rows.unsqueeze(1)).squeeze(1).cpu());
                                 if (on_student_topk) {
                                   auto k = std::min<int64_t>(config.algo.sdpo_top_k, lp.size(1));
                                   top.push_back(std::get<1>(lp.topk(k, 1)).cpu());
                                 }
                               });
    p.old_logq = torch::cat(old);
    p.time_old = seconds_since(start);
    return on_student_topk ? torch::cat(top) : torch::Tensor();
  }

  static void count_active_positions(const std::vector<Rollout>& rs, Prepared& p) {
    p.active_positions = 0;
    for (std::size_t i = 0; i < rs.size(); ++i) {
      if (p.active[i].item<float>() > 0.5f) p.active_positions += static_cast<int64_t>(rs[i].response_tokens.size());
    }
  }

  // The teacher's message per rollout, from its group's siblings (nullopt: no context, masked).
  std::vector<std::optional<std::string>> teacher_messages(const std::vector<Rollout>& rs, Prepared& p) {
    std::vector<std::optional<std::string>> messages(rs.size());
    for (std::size_t begin = 0; begin < rs.size();) {
      std::size_t end = begin;
      while (end < rs.size() && rs[end].group == rs[begin].group) ++end;
      std::vector<RolloutView> views;
      for (std::size_t j = begin; j < end; ++j) {
        views.push_back({rs[j].passed, rs[j].response_text, rs[j].feedback, rs[j].feedback_informative});
      }
      const auto& task = train_tasks[rs[begin].task_index];
      const auto reference = reference_solution(task);
      for (std::size_t j = begin; j < end; ++j) {
        auto context = trainer::teacher_context(config.teacher, teacher_context, task.prompt, views, j - begin, reference);
        ++p.contexts[to_string(context.kind)];
        messages[j] = std::move(context.message);
      }
      begin = end;
    }
    return messages;
  }

  // Teacher ids and log-probs at every position of the rollouts with a message: the teacher's own
  // top-k, or its log-probs at the student's top-k. Rollouts without one are made inactive.
  void teacher_targets(const std::vector<Rollout>& rs, const std::vector<std::optional<std::string>>& messages,
                       const torch::Tensor& student_topk, Prepared& p) {
    const bool on_student_topk = objective->teacher_scores_student_topk();
    const int64_t k = on_student_topk ? student_topk.size(1) : config.algo.top_k;
    const int64_t vocab = model->config().vocab_size;
    const int64_t k_eff = std::min<int64_t>(k, vocab);
    // Inactive rows get a harmless placeholder (uniform over the first k ids); they carry no weight.
    p.targets.teacher_ids = on_student_topk ? student_topk.clone()
                                            : torch::arange(k_eff, torch::kLong).unsqueeze(0).repeat({p.positions, 1});
    p.targets.teacher_logp = torch::full({p.positions, k_eff}, -std::log(static_cast<double>(k_eff)), torch::kFloat);
    TokenRows teacher_prompts, teacher_responses;
    std::vector<std::size_t> scored;
    for (std::size_t i = 0; i < rs.size(); ++i) {
      if (!messages[i]) {
        p.active[i] = 0.0f;
        ++p.masked;
        continue;
      }
      teacher_prompts.push_back(renderer->encode(*messages[i]));
      teacher_responses.push_back(rs[i].response_tokens);
      scored.push_back(i);
    }
    if (scored.empty()) return;
    torch::Tensor ids, logp;
    if (on_student_topk) {
      std::vector<torch::Tensor> rows;
      for (auto i : scored) rows.push_back(student_topk.slice(0, p.offsets[i], p.offsets[i] + rs[i].response_tokens.size()));
      ids = torch::cat(rows);
      logp = teacher->logprobs_at(teacher_prompts, teacher_responses, ids);
    } else {
      auto top = teacher->topk(teacher_prompts, teacher_responses, k_eff);
      ids = top.ids;
      logp = top.logp;
    }
    int64_t row = 0;
    for (auto i : scored) {
      const int64_t len = static_cast<int64_t>(rs[i].response_tokens.size());
      p.targets.teacher_ids.slice(0, p.offsets[i], p.offsets[i] + len).copy_(ids.slice(0, row, row + len));
      p.targets.teacher_logp.slice(0, p.offsets[i], p.offsets[i] + len).copy_(logp.slice(0, row, row + len));
      row += len;
    }
  }

  // --- student ----------------------------------------------------------------------------------
  struct PartsAccumulator {
    std::map<std::string, double> sums, weighted;
    double weight = 0.0, loss = 0.0;
    void add(const LossOutput& out, double tokens) {
      loss += out.loss.item<double>();
      for (const auto& [key, value] : out.parts) {
        if (is_additive_part(key)) {
          sums[key] += value;
        } else {
          weighted[key] += value * tokens;
        }
      }
      weight += tokens;
    }
    void into(nlohmann::json& record) const {
      record["loss"] = loss;
      for (const auto& [key, value] : sums) record[key] = value;
      for (const auto& [key, value] : weighted) record[key] = weight > 0 ? value / weight : 0.0;
    }
  };

  // Every rank's parts summed, so metrics.jsonl (written by rank 0) describes the global batch.
  // Ranks may hold different part names (one with no rollout has none): the names are gathered
  // first and reduced in one agreed order.
  PartsAccumulator global_parts(const PartsAccumulator& local) {
    if (comm->world_size() <= 1) return local;
    std::set<std::string> names;
    for (const auto& [key, value] : local.sums) names.insert(key);
    for (const auto& [key, value] : local.weighted) names.insert(key);
    std::string joined;
    for (const auto& name : names) joined += name + '\n';
    for (const auto& text : comm->all_gather_strings(joined)) {
      for (std::size_t at = 0, next; (next = text.find('\n', at)) != std::string::npos; at = next + 1)
        names.insert(text.substr(at, next - at));
    }
    std::vector<double> values{local.loss, local.weight};
    for (const auto& name : names) {
      values.push_back(local.sums.count(name) ? local.sums.at(name) : 0.0);
      values.push_back(local.weighted.count(name) ? local.weighted.at(name) : 0.0);
    }
    values = comm->all_reduce_sum(values);
    PartsAccumulator total;
    total.loss = values[0];
    total.weight = values[1];
    std::size_t i = 2;
    for (const auto& name : names) {
      if (is_additive_part(name)) total.sums[name] = values[i];
      else total.weighted[name] = values[i + 1];
      i += 2;
    }
    return total;
  }

  // Backward over rollouts [begin, end) (whole prompt groups, contiguous), micro-batched by
  // whole groups within the token budget.
  void backward_range(const Batch& batch, const Prepared& prep, std::size_t begin, std::size_t end,
                      double normalizer, PartsAccumulator& parts) {
    const auto& rs = batch.rollouts;
    std::size_t mb_begin = begin;
    while (mb_begin < end) {
      // Grow by whole groups while the padded size fits the budget (at least one group).
      std::size_t mb_end = mb_begin;
      int64_t widest = 0;
      while (mb_end < end) {
        std::size_t group_end = mb_end;
        int64_t group_widest = widest;
        while (group_end < end && rs[group_end].group == rs[mb_end].group) {
          group_widest = std::max<int64_t>(group_widest, rs[group_end].prompt_tokens.size() +
                                                             rs[group_end].response_tokens.size());
          ++group_end;
        }
        const int64_t rows = static_cast<int64_t>(group_end - mb_begin);
        if (mb_end > mb_begin && rows * group_widest > config.optim.micro_batch_tokens) break;
        mb_end = group_end;
        widest = group_widest;
      }
      StudentMicroBatch micro;
      const int64_t b = static_cast<int64_t>(mb_end - mb_begin);
      int64_t t_max = 0;
      for (std::size_t i = mb_begin; i < mb_end; ++i) {
        micro.prompts.push_back(rs[i].prompt_tokens);
        micro.responses.push_back(rs[i].response_tokens);
        t_max = std::max<int64_t>(t_max, rs[i].response_tokens.size());
      }
      const int64_t row_begin = prep.offsets[mb_begin];
      const int64_t row_end = mb_end < rs.size() ? prep.offsets[mb_end] : prep.positions;
      micro.targets.sampled = prep.targets.sampled.slice(0, row_begin, row_end);
      if (prep.targets.teacher_ids.defined()) {
        micro.targets.teacher_ids = prep.targets.teacher_ids.slice(0, row_begin, row_end);
        micro.targets.teacher_logp = prep.targets.teacher_logp.slice(0, row_begin, row_end);
      }
      auto mask = torch::zeros({b, t_max});
      auto group = torch::zeros({b}, torch::kLong);
      auto reward = torch::zeros({b});
      torch::Tensor old;
      if (prep.old_logq.defined()) old = torch::zeros({b, t_max});
      int64_t group_id = -1, last_group = -1;
      for (int64_t i = 0; i < b; ++i) {
        const auto& r = rs[mb_begin + i];
        const int64_t len = static_cast<int64_t>(r.response_tokens.size());
        mask[i].slice(0, 0, len).fill_(1.0);
        if (r.group != last_group) {
          ++group_id;
          last_group = r.group;
        }
        group[i] = group_id;
        reward[i] = r.reward;
        if (old.defined()) {
          const int64_t off = prep.offsets[mb_begin + i];
          old[i].slice(0, 0, len).copy_(prep.old_logq.slice(0, off, off + len));
        }
      }
      micro.batch.mask = mask;
      micro.batch.group = group;
      micro.batch.reward = reward;
      micro.batch.active = prep.active.slice(0, mb_begin, mb_end);
      micro.batch.old_logq = old;
      micro.batch.normalizer = normalizer;
      auto out = student_backward(model, *objective, micro, pad_id, config.optim.chunk_tokens);
      parts.add(out, mask.sum().item<double>());
      mb_begin = mb_end;
    }
  }

  double learning_rate(int64_t at_step) const {
    const auto& o = config.optim;
    if (o.warmup_steps > 0 && at_step < o.warmup_steps) {
      return o.lr * static_cast<double>(at_step + 1) / o.warmup_steps;
    }
    if (o.schedule == "constant") return o.lr;
    const double span = std::max(1, config.train.steps - o.warmup_steps);
    const double progress = std::clamp((at_step - o.warmup_steps) / span, 0.0, 1.0);
    const double floor = o.lr * o.min_lr_ratio;
    return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }

  void zero_grad() {
    if (sharded) sharded->zero_grad();
    else optimizer->zero_grad();
  }

  // All-reduce (or reduce-scatter onto the shards), clip, guard against non-finite gradients,
  // AdamW, EMA. Returns (grad norm, applied); the norm is the global one, equal on every rank.
  std::pair<double, bool> apply_update(nlohmann::json& record) {
    double norm = 0.0;
    if (sharded) {
      norm = sharded->reduce_gradients();
    } else {
      all_reduce_gradients(*comm, parameters);
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> norms;
      for (const auto& p : parameters) {
        if (p.grad().defined()) norms.push_back(p.grad().detach().to(torch::kFloat).norm().pow(2));
      }
      norm = norms.empty() ? 0.0 : std::sqrt(torch::stack(norms).sum().item<double>());
    }
    if (!std::isfinite(norm)) {
      ++skipped;
      log_event("warning", "step " + std::to_string(step + 1) + ": non-finite gradient norm (" + std::to_string(norm) +
                               "); update skipped");
      zero_grad();
      record["skipped_nonfinite"] = skipped;
      return {norm, false};
    }
    if (config.optim.grad_clip > 0 && norm > config.optim.grad_clip) {
      torch::NoGradGuard no_grad;
      const double scale = config.optim.grad_clip / (norm + 1e-6);
      if (sharded) {
        sharded->scale_gradients(scale);
      } else {
        for (auto& p : parameters) {
          if (p.grad().defined()) p.mutable_grad().mul_(scale);
        }
      }
    }
    const double lr = learning_rate(step);
    if (sharded) {
      sharded->step(lr);
    } else {
      for (auto& group : optimizer->param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
      }
      optimizer->step();
    }
    zero_grad();
    ++updates;
    if (teacher_weights == "ema" && teacher_model) ema_update(teacher_model, model, config.teacher.ema_rate);
    record["lr"] = lr;
    return {norm, true};
  }

  // A record for a step that did not count; throws once train.max_failed_steps happened in a row.
  nlohmann::json failed_step(nlohmann::json record, int64_t failed, const std::string& error,
                             Clock::time_point step_start) {
    ++consecutive_failed_steps;
    record["failed"] = true;
    record["failed_feedback"] = failed;
    record["rollouts"] = 0;
    record["update_applied"] = false;
    record["reward_mean"] = nullptr;
    record["accuracy"] = nullptr;
    record["loss"] = nullptr;
    record["error"] = error;
    record["attempt"] = consecutive_failed_steps;
    record["time"] = {{"total", seconds_since(step_start)}};
    metrics.write(record);
    const std::string endpoints = endpoint_list(config.env);
    if (consecutive_failed_steps >= config.train.max_failed_steps)
      throw std::runtime_error("step " + std::to_string(step + 1) + ": the feedback of every rollout failed in " +
                               std::to_string(consecutive_failed_steps) +
                               " attempts in a row (train.max_failed_steps); endpoints: " + endpoints +
                               "; last error: " + error);
    log_event("error", "step " + std::to_string(step + 1) + " failed: the feedback of all " + std::to_string(failed) +
                           " rollouts failed (" + error + "); it does not count and is made again (attempt " +
                           std::to_string(consecutive_failed_steps + 1) + " of " +
                           std::to_string(config.train.max_failed_steps) + ")");
    // The client has already retried and failed over; give the endpoints a moment more.
    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(30.0, std::pow(2.0, consecutive_failed_steps - 1))));
    return record;
  }

  nlohmann::json do_step() {
    const auto step_start = Clock::now();
    nlohmann::json record;
    record["step"] = step + 1;
    PartsAccumulator parts;
    double t_gen = 0, t_feedback = 0, t_teacher = 0, t_student = 0, t_old = 0;
    int64_t rollouts = 0, failed = 0, masked = 0, passed = 0, response_tokens = 0, empty = 0;
    std::map<std::string, int64_t> contexts;
    double reward_sum = 0;
    double grad_norm = 0;
    bool applied = true;
    zero_grad();
    const int64_t cursor_before = cursor;
    const int accumulation = config.optim.grad_accumulation;
    for (int a = 0; a < accumulation; ++a) {
      Batch batch = collect(a);
      t_gen += batch.time_generation;
      t_feedback += batch.time_feedback;
      // Every rollout of every process lost its feedback: nothing here is a real measurement of
      // the model. The step does not count (no update, no schedule step); run() makes it again.
      const double generated_all = comm->all_reduce_sum(static_cast<double>(batch.generated));
      const double graded_all =
          comm->all_reduce_sum(static_cast<double>(batch.generated - batch.failed_feedback));
      if (generated_all > 0 && graded_all == 0) {
        cursor = cursor_before;  // the retry draws the same prompts (and, seeded by step, the same samples)
        zero_grad();
        return failed_step(record, failed + batch.failed_feedback, batch.first_feedback_error, step_start);
      }
      failed += batch.failed_feedback;
      empty += batch.empty_responses;
      Prepared prep = prepare(batch);
      t_teacher += prep.time_teacher;
      t_old += prep.time_old;
      masked += prep.masked;
      for (const auto& r : batch.rollouts) {
        ++rollouts;
        passed += r.passed ? 1 : 0;
        reward_sum += r.reward;
        response_tokens += static_cast<int64_t>(r.response_tokens.size());
      }
      for (const auto& [kind, count] : prep.contexts) contexts[kind] += count;
      // The global per-batch constant: every process's tokens (or sequences) in this batch. With
      // active_tokens a batch whose every rollout is masked divides a zero loss by 1.
      const auto norm_mode = config.algo.objective.normalizer;
      const double local_units = norm_mode == Normalizer::sequences       ? static_cast<double>(batch.rollouts.size())
                                 : norm_mode == Normalizer::active_tokens ? static_cast<double>(prep.active_positions)
                                                                          : static_cast<double>(prep.positions);
      const double normalizer = std::max(1.0, comm->all_reduce_sum(local_units)) * accumulation;
      const auto student_start = Clock::now();
      const int minibatches = config.algo.off_policy_minibatches;
      if (minibatches <= 1) {
        backward_range(batch, prep, 0, batch.rollouts.size(), normalizer, parts);
      } else {
        // Off-policy GRPO: several updates on slices of whole groups, ratios against the rollout
        // policy. Minibatch m is the m-th slice of the global batch's groups (whatever rank holds
        // them), so every rank takes part in every update and N processes update as one would.
        const int64_t groups = config.rollout.prompts_per_step;
        auto first_rollout_of = [&](int64_t global_group) {
          std::size_t i = 0;
          while (i < batch.rollouts.size() && batch.rollouts[i].group + batch.first_group < global_group) ++i;
          return i;
        };
        for (int m = 0; m < minibatches; ++m) {
          const int64_t g0 = groups * m / minibatches, g1 = groups * (m + 1) / minibatches;
          const std::size_t r0 = first_rollout_of(g0), r1 = first_rollout_of(g1);
          if (r0 < r1) backward_range(batch, prep, r0, r1, normalizer / minibatches, parts);
          if (m + 1 < minibatches) {
            auto [norm, ok] = apply_update(record);
            grad_norm = norm;
            applied = applied && ok;
          }
        }
      }
      t_student += seconds_since(student_start);
    }
    const auto update_start = Clock::now();
    auto [norm, ok] = apply_update(record);
    grad_norm = norm;
    applied = applied && ok;
    t_student += seconds_since(update_start);
    ++step;
    consecutive_failed_steps = 0;

    if (comm->world_size() > 1) {
      std::vector<double> counts{static_cast<double>(rollouts), static_cast<double>(failed), static_cast<double>(empty),
                                 static_cast<double>(masked), static_cast<double>(passed), reward_sum,
                                 static_cast<double>(response_tokens)};
      for (auto kind : kContextKinds) counts.push_back(static_cast<double>(contexts[to_string(kind)]));
      counts = comm->all_reduce_sum(counts);
      rollouts = static_cast<int64_t>(counts[0]);
      failed = static_cast<int64_t>(counts[1]);
      empty = static_cast<int64_t>(counts[2]);
      masked = static_cast<int64_t>(counts[3]);
      passed = static_cast<int64_t>(counts[4]);
      reward_sum = counts[5];
      response_tokens = static_cast<int64_t>(counts[6]);
      for (std::size_t i = 0; i < kContextKinds.size(); ++i)
        contexts[to_string(kContextKinds[i])] = static_cast<int64_t>(counts[7 + i]);
      parts = global_parts(parts);
    }
    parts.into(record);
    record["objective"] = objective->name();
    record["grad_norm"] = grad_norm;
    record["update_applied"] = applied;
    record["rollouts"] = rollouts;
    record["failed_feedback"] = failed;
    record["empty_responses"] = empty;
    record["masked_rollouts"] = masked;
    if (objective->needs_teacher()) {
      // Every kind, zeros included, so a plot of context shares over steps has all its series.
      nlohmann::json by_kind = nlohmann::json::object();
      for (auto kind : kContextKinds) {
        by_kind[to_string(kind)] = contexts.count(to_string(kind)) ? contexts.at(to_string(kind)) : 0;
      }
      record["teacher_contexts"] = by_kind;
    }
    // null, never a made-up 0, when no rollout was measured (e.g. every response empty).
    record["reward_mean"] = rollouts ? nlohmann::json(reward_sum / rollouts) : nlohmann::json(nullptr);
    record["accuracy"] = rollouts ? nlohmann::json(static_cast<double>(passed) / rollouts) : nlohmann::json(nullptr);
    record["response_length"] = rollouts ? static_cast<double>(response_tokens) / rollouts : 0.0;
    const double total = seconds_since(step_start);
    record["time"] = {{"generation", t_gen}, {"feedback", t_feedback}, {"teacher", t_teacher},
                      {"old_logprobs", t_old}, {"student", t_student}, {"total", total}};
    record["tokens_per_s"] = total > 0 ? response_tokens / total : 0.0;
    metrics.write(record);
    return record;
  }

  // --- checkpoints ------------------------------------------------------------------------------
  fs::path save() {
    char name[32];
    std::snprintf(name, sizeof name, "checkpoint-%06lld", static_cast<long long>(step));
    const fs::path final_dir = output_dir / name;
    const fs::path tmp = output_dir / (std::string(name) + ".tmp");
    if (is_main()) {
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    }
    if (sharded) {
      // Every rank writes its optimizer shard into the directory rank 0 made, before rank 0
      // publishes it (train.output_dir must be shared storage when ranks span nodes).
      comm->barrier();
      sharded->save((tmp / shard_file_name(dist.rank, dist.world_size)).string());
      comm->barrier();
    }
    if (!is_main()) return final_dir;
    const auto save_dtype = model::dtype_from_name(config.checkpoint.save_dtype);
    const fs::path tokenizer_dir = fs::exists(fs::path(config.model.path) / "tokenizer.json")
                                       ? fs::path(config.model.path)
                                       : fs::path();
    model::save_pretrained(model, tmp, save_dtype,
                           tokenizer_dir.empty() ? std::nullopt : std::optional<fs::path>(tokenizer_dir));
    if (optimizer) torch::save(*optimizer, (tmp / "optimizer.pt").string());
    if (teacher_weights == "ema" && teacher_model) {
      model::save_pretrained(teacher_model, tmp / "teacher_ema", save_dtype,
                             tokenizer_dir.empty() ? std::nullopt : std::optional<fs::path>(tokenizer_dir));
    }
    auto generator = at::detail::getDefaultCPUGenerator();
    auto rng_state = generator.get_state();
    torch::save(rng_state, (tmp / "rng.pt").string());
    nlohmann::json state = {{"step", step}, {"cursor", cursor}, {"updates", updates}, {"skipped", skipped},
                            {"world_size", dist.world_size}, {"objective", objective->name()},
                            {"zero_stage", config.distributed.zero_stage}};
    std::ofstream(tmp / "trainer_state.json") << state.dump(2) << "\n";
    std::ofstream(tmp / "config.yaml") << config.yaml;
    fsync_tree(tmp);
    fs::remove_all(final_dir);
    fs::rename(tmp, final_dir);
    fsync_path(output_dir, O_RDONLY | O_DIRECTORY);  // the rename itself
    prune();
    return final_dir;
  }

  static std::string shard_file_name(int rank, int world_size) {
    return "optimizer-rank" + std::to_string(rank) + "-of-" + std::to_string(world_size) + ".pt";
  }

  void prune() {
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(output_dir)) {
      const auto name = entry.path().filename().string();
      if (entry.is_directory() && name.rfind("checkpoint-", 0) == 0 && name.find(".tmp") == std::string::npos) {
        found.push_back(entry.path());
      }
    }
    std::sort(found.begin(), found.end());
    while (found.size() > static_cast<std::size_t>(config.checkpoint.keep_last)) {
      fs::remove_all(found.front());
      found.erase(found.begin());
    }
  }

  void restore(const fs::path& checkpoint) {
    nlohmann::json state;
    try {
      state = nlohmann::json::parse(std::ifstream(checkpoint / "trainer_state.json"));
      step = state.at("step").get<int64_t>();
      cursor = state.at("cursor").get<int64_t>();
      updates = state.at("updates").get<int64_t>();
      skipped = state.value("skipped", int64_t{0});
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error((checkpoint / "trainer_state.json").string() + ": " + e.what());
    }
    // The batch is global and sampling seeded per prompt, so an unsharded run may resume on
    // another number of processes; a sharded optimizer state is cut for one world size.
    const int saved_stage = state.value("zero_stage", 0);
    const int saved_world = state.value("world_size", 1);
    if (saved_stage != config.distributed.zero_stage && (saved_stage == 0 || config.distributed.zero_stage == 0)) {
      throw ConfigError("distributed.zero_stage", "the checkpoint " + checkpoint.string() + " was written with zero_stage " +
                                                      std::to_string(saved_stage) + "; resume with the same sharding");
    }
    if (sharded) {
      if (saved_world != dist.world_size) {
        throw std::runtime_error("--resume: the sharded optimizer state in " + checkpoint.string() + " is cut for " +
                                 std::to_string(saved_world) + " ranks, this run has " + std::to_string(dist.world_size));
      }
      sharded->load((checkpoint / shard_file_name(dist.rank, dist.world_size)).string());
    } else {
      torch::load(*optimizer, (checkpoint / "optimizer.pt").string());
    }
    torch::Tensor rng_state;
    torch::load(rng_state, (checkpoint / "rng.pt").string());
    auto generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng_state);
    log_event("info", "resumed from " + checkpoint.string() + " at step " + std::to_string(step));
  }

  nlohmann::json run_eval() {
    if (eval_tasks.empty()) throw ConfigError("data.eval_tasks", "no evaluation tasks configured");
    nlohmann::json result;
    try {
      // Each rank evaluates its share of the batches; every rank combines all shares, so all of
      // them reach the same result (or the same EvaluationFailed).
      auto part = evaluate_part(model, *tokenizer, *renderer, eval_tasks, *client, config.env, config.eval,
                                mix_seed({config.train.seed, 0xe7a1ULL}), true, dist.rank, dist.world_size);
      std::vector<nlohmann::json> parts;
      if (comm->world_size() > 1) {
        for (const auto& text : comm->all_gather_strings(part.dump())) parts.push_back(nlohmann::json::parse(text));
      } else {
        parts.push_back(std::move(part));
      }
      result = combine_evaluation(parts, config.env, config.eval, true);
    } catch (const EvaluationFailed& e) {
      // Training goes on (its own steps retry on feedback failures); the evaluation is recorded
      // as failed, not as a number.
      log_event("error", "step " + std::to_string(step) + ": " + e.what());
      if (is_main()) metrics.write({{"step", step}, {"eval_failed", e.what()}});
      return {{"error", e.what()}};
    }
    if (is_main()) {
      fs::create_directories(output_dir / "eval");
      char name[32];
      std::snprintf(name, sizeof name, "step-%06lld.json", static_cast<long long>(step));
      std::ofstream(output_dir / "eval" / name) << result.dump(2) << "\n";
      metrics.write({{"step", step}, {"eval", result["metrics"]["overall"]}});
    }
    return result;
  }
};

Trainer::Trainer(TrainConfig config, const std::string& resume) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->load(resume);
}

Trainer::~Trainer() = default;

nlohmann::json Trainer::step() { return impl_->do_step(); }

nlohmann::json Trainer::evaluate_now() { return impl_->run_eval(); }

fs::path Trainer::save_checkpoint() { return impl_->save(); }

int64_t Trainer::steps_done() const { return impl_->step; }

model::CausalLM& Trainer::model() { return impl_->model; }

const TrainConfig& Trainer::config() const { return impl_->config; }

void Trainer::run() {
  auto& s = *impl_;
  const auto& c = s.config;
  const bool tty = c.train.progress && isatty(STDERR_FILENO) && s.is_main();
  const auto start = Clock::now();
  const int64_t first = s.step;
  while (s.step < c.train.steps) {
    auto record = s.do_step();
    if (record.value("failed", false)) continue;  // logged by failed_step; the same step again
    if (s.is_main()) {
      const double elapsed = seconds_since(start);
      const double per_step = elapsed / static_cast<double>(s.step - first);
      const double eta = per_step * static_cast<double>(c.train.steps - s.step);
      // "n/a" for a value no rollout measured (null in metrics.jsonl), never a made-up 0.
      auto shown = [&record](const char* key, const char* format) {
        char text[32] = "n/a";
        if (record.contains(key) && record[key].is_number()) std::snprintf(text, sizeof text, format, record[key].get<double>());
        return std::string(text);
      };
      char line[512];
      std::snprintf(line, sizeof line, "step %lld/%d loss %s reward %s acc %s len %.0f %.1fs/step ETA %s",
                    static_cast<long long>(s.step), c.train.steps, shown("loss", "%.4f").c_str(),
                    shown("reward_mean", "%.3f").c_str(), shown("accuracy", "%.3f").c_str(),
                    record.value("response_length", 0.0), per_step, format_duration(eta).c_str());
      if (tty) {
        const int width = 24;
        const int filled = static_cast<int>(width * s.step / std::max(1, c.train.steps));
        std::fprintf(stderr, "\r[%s%s] %s", std::string(filled, '#').c_str(),
                     std::string(width - filled, '.').c_str(), line);
        std::fflush(stderr);
      } else if (s.step % c.train.log_every == 0 || s.step == c.train.steps) {
        std::fprintf(stderr, "%s\n", line);
      }
    }
    if (c.eval.every > 0 && s.step % c.eval.every == 0 && !s.eval_tasks.empty()) s.run_eval();
    if (c.checkpoint.every > 0 && s.step % c.checkpoint.every == 0 && s.step < c.train.steps) s.save();
  }
  if (tty) std::fprintf(stderr, "\n");
  if (s.step > first || !fs::exists(latest_checkpoint(s.output_dir))) s.save();
  if (!s.eval_tasks.empty() && (c.eval.every == 0 || s.step % c.eval.every != 0)) s.run_eval();
}

fs::path latest_checkpoint(const fs::path& output_dir) {
  if (!fs::exists(output_dir)) return {};
  fs::path best;
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const auto name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("checkpoint-", 0) == 0 && name.find(".tmp") == std::string::npos &&
        fs::exists(entry.path() / "trainer_state.json") && (best.empty() || entry.path() > best)) {
      best = entry.path();
    }
  }
  return best;
}

}  // namespace distil::trainer
