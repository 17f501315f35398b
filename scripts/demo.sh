#!/usr/bin/env bash
# The main job: a miniature DistIL reproduction on CPU.
#   installs what is missing (scripts/setup.sh), builds distil-env/distil-train/distil-eval/distil-demo into
#   build/, writes the built-in tasks, starts distil-env on loopback, pretrains the tiny demo model
#   (or reuses runs/cache/), evaluates it on the held-out split, trains it with DistIL against the
#   server's feedback, evaluates again, prints a before/after table, writes plots, stops the server.
#
#   scripts/demo.sh                          the built-in demo: the rich-feedback code domain
#                                            (word-pipeline programs graded in the sandbox; docs/demo.md)
#   scripts/demo.sh --domain arithmetic      two-digit arithmetic (one bit of feedback)
#   scripts/demo.sh --model DIR --train-tasks A.jsonl --eval-tasks B.jsonl [--config my.yaml]
#                                            the same pipeline on a real model and real tasks
# Options:
#   --domain NAME      code (default) | arithmetic: the built-in task domain and its model recipe
#   --config FILE      training config over configs/default.yaml (default: configs/demo_code.yaml,
#                      or configs/demo.yaml for arithmetic)
#   --set KEY=VALUE    override one training config key (repeatable), e.g. --set train.steps=50
#   --recipe-set K=V   override one pretraining recipe key (configs/demo_code_pretrain.yaml, or
#                      configs/demo_pretrain.yaml for arithmetic)
#   --objective NAME   distil (default) | ce | sdpo | grpo | opsd | sft
#   --model DIR        a Hugging Face model directory instead of the pretrained demo model
#   --train-tasks F / --eval-tasks F   task JSONL files instead of the generated ones
#   --out DIR          where everything goes (default: runs/demo-code, runs/demo for arithmetic)
#   --port N           distil-env port on 127.0.0.1 (default: 18080)
#   --skip-setup / --skip-build        for repeated runs
set -euo pipefail
cd "$(dirname "$0")/.."
# One intra-op thread: the demo model is tiny, and on the shared 2-core machine two threads made
# a pretraining step ~4x slower (threads spinning against other processes).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
source scripts/lib/pipeline.sh
source scripts/lib/options.sh

# The shared options are parsed in scripts/lib/options.sh; these two are demo.sh's own.
recipe_overrides=()
objective=distil
port=18080
script_option() {
  case "$1" in
    --recipe-set) needs_value "$@"; recipe_overrides+=(--recipe-set "$2"); option_shift=2 ;;
    --objective) needs_value "$@"; objective=$2; option_shift=2 ;;
    *) return 1 ;;
  esac
}
parse_options demo.sh "$@"
case "$domain" in
  code) : "${out:=runs/demo-code}" ;;
  arithmetic) : "${out:=runs/demo}" ;;
esac
[ -f "$config" ] || { echo "demo.sh: --config $config: no such file" >&2; exit 2; }
mkdir -p "$out"
log() { printf '\n[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)

build_dir=${DISTIL_BUILD_DIR:-build}
if ((!skip_setup)); then log "setup: checking dependencies"; scripts/setup.sh; fi
if ((!skip_build)); then
  log "build: distil-env, distil-train, distil-eval, distil-demo into $build_dir/"
  t0=$(date +%s)
  build_binaries "$build_dir"
  echo "build took $(( $(date +%s) - t0 ))s"
fi
locate_binaries demo.sh "$build_dir"
pipeline_started=$(date +%s)

# The before/after table and the reward / held-out accuracy curves (stdlib Python, no plotting
# library needed).
report() {
  /usr/bin/python3 -S - "$@" <<'PY'
import json, sys, os
before_path, after_path, pretrain_path, metrics_path, label, svg_path = sys.argv[1:7]
def load(path):
    try:
        with open(path) as f: return json.load(f)
    except (OSError, ValueError): return None
def overall(doc):
    if not doc: return {}
    m = doc.get("metrics", doc)
    return m.get("overall", m)
before, after = overall(load(before_path)), overall(load(after_path))
keys = [k for k in ["avg@n", "pass@1", "pass@4", "maj@4", "prompts", "samples"] if k in before or k in after]
print("\nheld-out split            before     after     change")
for k in keys:
    b, a = before.get(k), after.get(k)
    if isinstance(b, (int, float)) and isinstance(a, (int, float)):
        pct = k not in ("prompts", "samples")
        fmt = (lambda v: f"{100*v:8.1f}%") if pct else (lambda v: f"{v:9.0f}")
        change = f"{100*(a-b):+8.1f} pts" if pct else f"{a-b:+8.0f}"
        print(f"  {k:<20} {fmt(b)} {fmt(a)}  {change}")
pre = load(pretrain_path)
if pre and "accuracy_avg_at_n" in pre:
    acc = pre["accuracy_avg_at_n"]
    print(f"\npretrained model, avg@{pre.get('accuracy_samples')} at temperature 1 on {pre.get('accuracy_prompts')} held-out problems:")
    names = {"student": "student (plain prompt)", "teacher_solution": "teacher: correct sibling in context",
             "teacher_reference": "teacher: reference solution in context",
             "teacher_feedback": "teacher: env feedback alone on a wrong answer",
             "teacher_feedback_correct": "teacher: own right answer as the solution",
             "student_greedy": "student, greedy (temperature 0)"}
    for k, v in acc.items(): print(f"  {names.get(k, k):<44} {100*v:5.1f}%")
steps, reward, evals = [], [], []
if "avg@n" in before: evals.append((0, before["avg@n"]))
try:
    with open(metrics_path) as f:
        for line in f:
            try: r = json.loads(line)
            except ValueError: continue
            if "eval" in r and isinstance(r["eval"], dict) and "avg@n" in r["eval"]:
                evals.append((r["step"], r["eval"]["avg@n"]))
            elif r.get("reward_mean") is not None and not r.get("failed"):
                steps.append(r["step"]); reward.append(r["reward_mean"])
except OSError: pass
def smooth(v, w=10):
    out, acc = [], 0.0
    for i, x in enumerate(v):
        acc += x
        if i >= w: acc -= v[i - w]
        out.append(acc / min(i + 1, w))
    return out
def panel(x0, title, series, xmax):
    W, H, L, T = 420, 260, 50, 30
    g = [f'<g transform="translate({x0},0)"><text x="{L}" y="18" font-size="14">{title}</text>',
         f'<rect x="{L}" y="{T}" width="{W-L-10}" height="{H-T-30}" fill="none" stroke="#999"/>']
    for yv in (0, 0.25, 0.5, 0.75, 1.0):
        y = T + (H - T - 30) * (1 - yv)
        g.append(f'<text x="{L-6}" y="{y+4}" font-size="10" text-anchor="end">{yv:.2f}</text>')
        g.append(f'<line x1="{L}" x2="{W-10}" y1="{y}" y2="{y}" stroke="#eee"/>')
    g.append(f'<text x="{(L+W)/2}" y="{H-5}" font-size="11" text-anchor="middle">step (0..{xmax})</text>')
    for name, pts, color in series:
        if not pts: continue
        path = " ".join(f"{L + (W-L-10)*x/max(xmax,1):.1f},{T + (H-T-30)*(1-min(max(y,0),1)):.1f}" for x, y in pts)
        g.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        g.append(f'<text x="{W-12}" y="{T+14+14*len([s for s in series if s[0] < name])}" font-size="11" fill="{color}" text-anchor="end">{name}</text>')
    g.append("</g>")
    return "\n".join(g)
xmax = max([s for s in steps] + [e[0] for e in evals] + [1])
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="860" height="270" font-family="sans-serif">',
       panel(0, f"train reward ({label})", [("reward (10-step mean)", list(zip(steps, smooth(reward))), "#1f77b4"),
                                             ("reward", list(zip(steps, reward)), "#c6dbef")], xmax),
       panel(430, "held-out avg@n", [("avg@n", evals, "#d62728")], xmax), "</svg>"]
os.makedirs(os.path.dirname(svg_path) or ".", exist_ok=True)
with open(svg_path, "w") as f: f.write("\n".join(svg))
print(f"\ncurves: {svg_path}")
PY
}

# 1. Tasks: the generated arithmetic domain unless real task files are given.
if [ -z "$train_tasks" ] || [ -z "$eval_tasks" ]; then
  [ -z "$train_tasks$eval_tasks" ] || { echo "demo.sh: give both --train-tasks and --eval-tasks" >&2; exit 2; }
  log "data: generating the built-in tasks"
  "$DISTIL_DEMO" data --out "$out/data" --recipe "$recipe" "${recipe_overrides[@]}"
  train_tasks=$out/data/train.jsonl
  eval_tasks=$out/data/eval.jsonl
fi
for f in "$train_tasks" "$eval_tasks"; do [ -f "$f" ] || { echo "demo.sh: task file $f: no such file" >&2; exit 2; }; done

# 2. The feedback server on loopback, stopped on any exit.
log "env: starting distil-env on 127.0.0.1:$port"
stop_env() {
  if [ -n "${env_pid:-}" ] && kill -0 "$env_pid" 2>/dev/null; then kill -TERM "$env_pid" 2>/dev/null || true; wait "$env_pid" 2>/dev/null || true; fi
}
trap stop_env EXIT
trap 'exit 130' INT TERM
start_env_server demo.sh "$port" "$out/distil-env.log" "$train_tasks" "$eval_tasks"

common=(--config "$config" "${overrides[@]}"
        --set "env.endpoints=[\"$endpoint\"]"
        --set "data.train_tasks=[\"$train_tasks\"]" --set "data.eval_tasks=[\"$eval_tasks\"]")

# 3. The model: pretrained here (cached by recipe) unless one is given.
if [ -z "$model_dir" ]; then
  log "model: pretraining the demo model (or reusing runs/cache/)"
  "$DISTIL_DEMO" pretrain "${common[@]}" --recipe "$recipe" "${recipe_overrides[@]}" \
    --cache runs/cache --path-out "$out/model_path" >"$out/pretrain_report.json"
  model_dir=$(cat "$out/model_path")
  cp "$model_dir/demo_report.json" "$out/pretrain_report.json" 2>/dev/null || true
fi
[ -f "$model_dir/config.json" ] || { echo "demo.sh: $model_dir is not a model directory (no config.json)" >&2; exit 2; }

# 4. Before.
log "eval: the starting model on the held-out split"
"$DISTIL_EVAL" "${common[@]}" --model "$model_dir" -o "$out/eval_before.json"

# 5. Train (the trainer draws its own progress bar and evaluates every eval.every steps).
run_dir=$out/$objective
rm -rf "$run_dir"
log "train: $objective against $endpoint"
"$DISTIL_TRAIN" train "${common[@]}" --set "model.path=\"$model_dir\"" --set "algo.objective=$objective" \
  --set "train.output_dir=\"$run_dir\"" >"$out/train_stdout.log"
# (stdout holds the merged configuration, also saved as $run_dir/config.yaml; progress is on stderr)

# 6. After: the final checkpoint.
final=$(ls -d "$run_dir"/checkpoint-* 2>/dev/null | grep -v "\.tmp" | sort | tail -1 || true)
[ -n "$final" ] || { echo "demo.sh: training wrote no checkpoint in $run_dir" >&2; exit 1; }
log "eval: the trained model ($final) on the held-out split"
"$DISTIL_EVAL" "${common[@]}" --model "$final" -o "$out/eval_after.json"

# 7. Plots and the table.
"$DISTIL_TRAIN" plot --metrics "$run_dir/metrics.jsonl" --out "$out/plots" >/dev/null
report "$out/eval_before.json" "$out/eval_after.json" "$out/pretrain_report.json" "$run_dir/metrics.jsonl" \
  "$objective" "$out/plots/curves.svg" | tee "$out/summary.txt"
echo
echo "plots: $out/plots/index.html   metrics: $run_dir/metrics.jsonl   model: $final"
echo "pipeline time (without setup/build): $(( $(date +%s) - pipeline_started ))s; total $(( $(date +%s) - started ))s"
echo "cpu: $(cpu_model), $(getconf _NPROCESSORS_ONLN) cores; kernels: DISTIL_REPRODUCIBLE=$DISTIL_REPRODUCIBLE"
