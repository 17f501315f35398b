#!/usr/bin/env bash
# The paper-style comparison: distil, ce, sdpo, grpo and opsd from the same starting model, each
# given the same wall-clock budget of *training* time (the sum of the trainer's per-step times;
# held-out evaluations are excluded so that evaluating more often costs no method), for each seed.
# Prints held-out avg@n and pass@k per method (best and last evaluation within the budget, mean
# and spread over seeds) and writes a plot of held-out avg@n against training time.
#
#   scripts/compare.sh                                   the rich-feedback code domain, 5 seeds, 90 s per run
#   scripts/compare.sh --domain arithmetic               the two-digit arithmetic domain (one bit of feedback)
#   scripts/compare.sh --budget 300 --seeds "0 1 2 3"    longer / other seeds
#   scripts/compare.sh --model DIR --train-tasks A.jsonl --eval-tasks B.jsonl --config my.yaml
# Options:
#   --domain NAME      code (default) | arithmetic: the built-in tasks, model recipe and config
#   --methods "LIST"   what to compare (default: "distil ce sdpo opsd grpo grpo_off distil_ema ce_ema"):
#                      an objective name, or grpo_off (off-policy GRPO, 2 minibatch updates per
#                      batch), distil_ema / ce_ema (DistIL / CE with SDPO's EMA teacher instead of
#                      the current weights: a teacher variant, the objective unchanged);
#                      objective variants: distil_kl / distil_ema_kl (algo.future_cost=kl),
#                      distil_g09 (algo.gamma=0.9), distil_l05 (algo.lambda=0.5), distil_clip
#                      (algo.future_clip=1); schedule variants: distil_mb2 / distil_ema_mb2 (grpo_off's
#                      2 minibatch updates per batch, the objective unchanged)
#   --seeds "LIST"     train.seed values (default: "0 1 2 3 4")
#   --budget S         seconds of training per run (default: 90)
#   --eval-every N     held-out evaluation every N steps (default: 10)
#   --config FILE      training config (default: configs/demo_code.yaml; arithmetic: configs/demo.yaml)
#                      --set KEY=VALUE overrides
#   --model DIR, --train-tasks F, --eval-tasks F, --out DIR (default runs/compare-DOMAIN), --port N
# Writes OUT/table.txt, OUT/curves.svg and OUT/summary.json (best held-out avg@n within the budget
# per method: mean, sd and per-seed values), and prints summary.json's path as its last line.
#   --skip-setup, --skip-build, --report-only (re-print the table from an earlier --out)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pipeline.sh
source scripts/lib/options.sh
# One intra-op thread: the demo model is tiny, and on the shared 2-core machine two threads made
# a pretraining step ~4x slower (threads spinning against other processes).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# The shared options are parsed in scripts/lib/options.sh; these are compare.sh's own.
methods="distil ce sdpo opsd grpo grpo_off distil_ema ce_ema"
seeds="0 1 2 3 4"
budget=90
eval_every=10
port=18081
report_only=0
script_option() {
  case "$1" in
    --methods) needs_value "$@"; methods=$2; option_shift=2 ;;
    --seeds) needs_value "$@"; seeds=$2; option_shift=2 ;;
    --budget) needs_value "$@"; budget=$2; option_shift=2 ;;
    --eval-every) needs_value "$@"; eval_every=$2; option_shift=2 ;;
    --report-only) report_only=1; option_shift=1 ;;
    *) return 1 ;;
  esac
}
parse_options compare.sh "$@"
[[ "$budget" =~ ^[0-9]+$ ]] && ((budget > 0)) || { echo "compare.sh: --budget must be a positive integer" >&2; exit 2; }
[[ "$eval_every" =~ ^[0-9]+$ ]] && ((eval_every > 0)) || { echo "compare.sh: --eval-every must be a positive integer" >&2; exit 2; }
: "${out:=runs/compare-$domain}"
# method_args METHOD: the trainer settings of one compared method.
# The teacher's weights are set here for every method, so that a config's own teacher.weights
# (the code demo's config picks the EMA teacher) never turns one method into another: `auto` is
# each objective's own convention (sdpo: EMA, opsd: the initial weights, distil/ce: the current
# weights, as the paper's sg(pi_theta) reads).
method_args() {
  case "$1" in
    grpo_off) echo "--set algo.objective=grpo --set algo.off_policy_minibatches=2 --set teacher.weights=auto" ;;
    distil_ema) echo "--set algo.objective=distil --set teacher.weights=ema" ;;
    ce_ema) echo "--set algo.objective=ce --set teacher.weights=ema" ;;
    # Variants of the objective (issue 15 item 5), each named as one in the table.
    distil_kl) echo "--set algo.objective=distil --set teacher.weights=auto --set algo.future_cost=kl" ;;
    distil_ema_kl) echo "--set algo.objective=distil --set teacher.weights=ema --set algo.future_cost=kl" ;;
    distil_g09) echo "--set algo.objective=distil --set teacher.weights=auto --set algo.gamma=0.9" ;;
    distil_l05) echo "--set algo.objective=distil --set teacher.weights=auto --set algo.lambda=0.5" ;;
    distil_clip) echo "--set algo.objective=distil --set teacher.weights=auto --set algo.future_clip=1" ;;
    # The update schedule of grpo_off (2 minibatch updates per rollout batch, each on half of the
    # groups) with DistIL's objective unchanged: equal data reuse, not a new loss.
    distil_mb2) echo "--set algo.objective=distil --set teacher.weights=auto --set algo.off_policy_minibatches=2" ;;
    distil_ema_mb2) echo "--set algo.objective=distil --set teacher.weights=ema --set algo.off_policy_minibatches=2" ;;
    *) echo "--set algo.objective=$1 --set teacher.weights=auto" ;;
  esac
}
for m in $methods; do
  case "$m" in distil|ce|sdpo|grpo|opsd|sft|grpo_off|distil_ema|ce_ema|distil_kl|distil_ema_kl|distil_g09|distil_l05|distil_clip|distil_mb2|distil_ema_mb2) ;; *) echo "compare.sh: unknown method '$m'" >&2; exit 2 ;; esac
done
for s in $seeds; do [[ "$s" =~ ^[0-9]+$ ]] || { echo "compare.sh: seed '$s' is not a non-negative integer" >&2; exit 2; }; done
mkdir -p "$out"

# Aggregates every run under $out into the table and the curve plot.
report() {
  /usr/bin/python3 -S - "$out" "$budget" "$methods" "$seeds" "$domain" "$(cpu_model)" <<'PY'
import json, math, os, sys
out, budget, methods, seeds, domain, cpu = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5], sys.argv[6]
def read_jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try: rows.append(json.loads(line))
                except ValueError: pass
    except OSError: pass
    return rows
def run_curve(path):
    """(train seconds, step, eval metrics) per evaluation, with the training time spent before it."""
    spent, steps, curve = 0.0, 0, []
    for r in read_jsonl(path):
        if isinstance(r.get("eval"), dict):
            curve.append((spent, r.get("step", steps), r["eval"]))
        elif isinstance(r.get("time"), dict):
            spent += float(r["time"].get("total", 0.0)); steps = r.get("step", steps)
    return curve, spent, steps
try:
    with open(os.path.join(out, "eval_before.json")) as f: base = json.load(f)["metrics"]["overall"]
except (OSError, ValueError, KeyError): base = None
# pass@k and maj@k beside avg@n (pass@1 is avg@n).
pass_keys = sorted({k for k in (base or {}) if (k.startswith("pass@") and k != "pass@1") or (k.startswith("maj@") and k != "maj@1")},
                   key=lambda k: (k[:4], int(k[4:].lstrip("@"))))
def stats(values):
    values = [v for v in values if v is not None]
    if not values: return None, None
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd
def fmt(ms):
    m, sd = ms
    return "      n/a     " if m is None else f"{100*m:5.1f} ± {100*sd:4.1f}  "
rows, curves, summary_methods = [], {}, {}
for method in methods:
    best, last, best_pass, last_pass, steps_done, n = [], [], {k: [] for k in pass_keys}, {k: [] for k in pass_keys}, [], 0
    for seed in seeds:
        curve, spent, steps = run_curve(os.path.join(out, f"{method}-seed{seed}", "metrics.jsonl"))
        within = [c for c in curve if c[0] <= budget * 1.0001 and c[1] > 0]
        curves.setdefault(method, []).append([(0.0, base["avg@n"])] + [(t, e["avg@n"]) for t, _, e in within] if base else
                                            [(t, e["avg@n"]) for t, _, e in within])
        if not within: continue
        n += 1
        b = max(within, key=lambda c: c[2]["avg@n"])
        best.append(b[2]["avg@n"]); last.append(within[-1][2]["avg@n"]); steps_done.append(within[-1][1])
        for k in pass_keys:
            best_pass[k].append(b[2].get(k)); last_pass[k].append(within[-1][2].get(k))
    rows.append((method, n, stats(best), stats(last), {k: stats(v) for k, v in best_pass.items()},
                 {k: stats(v) for k, v in last_pass.items()}, stats(steps_done)))
    summary_methods[method] = {"mean": stats(best)[0], "sd": stats(best)[1], "seeds": best,
                               "last_mean": stats(last)[0], "last_sd": stats(last)[1],
                               **{f"best_{k}": {"mean": stats(v)[0], "sd": stats(v)[1]} for k, v in best_pass.items()}}
print(f"\n{domain} domain, cpu: {cpu}")
print(f"held-out results within {budget:.0f} s of training per run (mean ± sd over seeds {' '.join(seeds)}, in %)")
head = f"{'method':<10}{'runs':>5}  {'best avg@n':^14}" + "".join(f"{'best '+k:^14}" for k in pass_keys) + \
       f"{'last avg@n':^14}" + "".join(f"{'last '+k:^14}" for k in pass_keys) + f"{'steps':>8}"
print(head); print("-" * len(head))
if base:
    print(f"{'start':<10}{'-':>5}  {100*base['avg@n']:5.1f}         " + "".join(f"{100*base[k]:5.1f}         " for k in pass_keys) +
          f"{100*base['avg@n']:5.1f}         " + "".join(f"{100*base[k]:5.1f}         " for k in pass_keys) + f"{0:>8}")
for method, n, best, last, bp, lp, st in rows:
    print(f"{method:<10}{n:>5}  {fmt(best)}" + "".join(fmt(bp[k]) for k in pass_keys) + f"{fmt(last)}" +
          "".join(fmt(lp[k]) for k in pass_keys) + (f"{st[0]:>8.0f}" if st[0] is not None else f"{'-':>8}"))
# The same evaluations at equal steps: evaluations come every --eval-every steps, so a method a few
# percent slower per step can miss the last one before the budget; the held-out avg@n at each
# evaluation step that every method reached in some seed (runs past the budget included), beside
# the training seconds it took.
step_table = {}
for method in methods:
    for seed in seeds:
        curve, _, _ = run_curve(os.path.join(out, f"{method}-seed{seed}", "metrics.jsonl"))
        for t, step, e in curve:
            if step > 0: step_table.setdefault(step, {}).setdefault(method, []).append((e["avg@n"], t))
common = sorted(st for st, by in step_table.items() if all(m in by for m in methods))
if common:
    print(f"\nheld-out avg@n at equal steps (mean ± sd over the seeds that got there, in %; mean training seconds)")
    print(f"{'method':<12}" + "".join(f"{'step ' + str(st):^24}" for st in common))
    for method in methods:
        cells = []
        for st in common:
            vals = step_table[st][method]
            m, sd = stats([v for v, _ in vals])
            cells.append(f"{100*m:5.1f} ± {100*sd:4.1f} ({len(vals)}) {sum(t for _, t in vals)/len(vals):4.0f}s ")
        print(f"{method:<12}" + "".join(f"{c:^24}" for c in cells))
# Diagnostics over each method's steps within the budget (all seeds): seconds per step and the
# grader's share of it, training-batch accuracy early and late, where the teacher's context came
# from, and the size of the local and future-credit terms (issue 15 item 5: why a method wins).
diag = []
for method in methods:
    steps, contexts, local, future, acc_first, acc_last = [], {}, [], [], [], []
    for seed in seeds:
        spent, rows = 0.0, []
        for r in read_jsonl(os.path.join(out, f"{method}-seed{seed}", "metrics.jsonl")):
            if isinstance(r.get("time"), dict) and spent < budget:
                spent += float(r["time"].get("total", 0.0)); rows.append(r)
        steps += [r["time"] for r in rows]
        for r in rows:
            for k, v in (r.get("teacher_contexts") or {}).items(): contexts[k] = contexts.get(k, 0) + v
            if isinstance(r.get("local"), (int, float)): local.append(abs(r["local"]))
            if isinstance(r.get("future_credit_abs"), (int, float)): future.append(r["future_credit_abs"])
        accs = [r["accuracy"] for r in rows if isinstance(r.get("accuracy"), (int, float))]
        if len(accs) >= 10: acc_first.append(sum(accs[:5]) / 5); acc_last.append(sum(accs[-5:]) / 5)
    if not steps: continue
    per_step = sum(t.get("total", 0.0) for t in steps) / len(steps)
    grading = sum(t.get("feedback", 0.0) for t in steps) / max(1e-9, sum(t.get("total", 0.0) for t in steps))
    total_ctx = sum(contexts.values())
    share = lambda k: f"{100*contexts.get(k, 0)/total_ctx:5.1f}" if total_ctx else "    -"
    mean = lambda v: f"{sum(v)/len(v):7.3f}" if v else "      -"
    diag.append(f"{method:<12}{per_step:7.2f} {100*grading:6.0f}%  {mean(acc_first)} {mean(acc_last)}  " +
                " ".join(share(k) for k in ("sibling", "feedback", "reference", "own_response", "masked")) +
                f"  {mean(local)} {mean(future)}")
if diag:
    print(f"\ndiagnostics within the budget (all seeds): s/step, grading share, train accuracy (first / last 5 steps),")
    print("teacher context of rollouts in % (sibling feedback reference own masked), |local| and mean |future credit| per token")
    print(f"{'method':<12}{'s/step':>7} {'grade':>7}  {'acc0':>7} {'acc1':>7}  {'sib':>5} {'fbk':>5} {'ref':>5} {'own':>5} {'mask':>5}  {'local':>7} {'future':>7}")
    for line in diag: print(line)
# Plot: mean over seeds of the last evaluation at or before t, against training seconds, with a
# band of one sd over seeds.
colors = {"distil": "#d62728", "ce": "#ff7f0e", "sdpo": "#2ca02c", "grpo": "#1f77b4", "opsd": "#9467bd", "sft": "#8c564b",
          "grpo_off": "#17becf", "distil_ema": "#e377c2", "ce_ema": "#bcbd22", "distil_mb2": "#7f0000",
          "distil_ema_mb2": "#ff9896"}
W, H, L, T, B = 640, 360, 55, 30, 40
grid = [budget * i / 60 for i in range(61)]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W+150}" height="{H}" font-family="sans-serif">',
       f'<text x="{L}" y="18" font-size="14">held-out avg@n vs training seconds (mean over {len(seeds)} seeds)</text>',
       f'<rect x="{L}" y="{T}" width="{W-L}" height="{H-T-B}" fill="none" stroke="#999"/>']
vals = [v for cs in curves.values() for c in cs for _, v in c] or [0, 1]
lo, hi = max(0.0, math.floor(min(vals) * 10) / 10), min(1.0, math.ceil(max(vals) * 10) / 10)
hi = hi if hi > lo else lo + 0.1
for i in range(6):
    yv = lo + (hi - lo) * i / 5; y = T + (H - T - B) * (1 - i / 5)
    svg.append(f'<text x="{L-6}" y="{y+4}" font-size="10" text-anchor="end">{yv:.2f}</text>')
    svg.append(f'<line x1="{L}" x2="{W}" y1="{y}" y2="{y}" stroke="#eee"/>')
for i in range(5):
    x = L + (W - L) * i / 4
    svg.append(f'<text x="{x}" y="{H-B+14}" font-size="10" text-anchor="middle">{budget*i/4:.0f}s</text>')
for idx, (method, cs) in enumerate(curves.items()):
    pts, bands = [], []
    for t in grid:
        ys = [next((v for tt, v in reversed(c) if tt <= t), None) for c in cs if c]
        ys = [y for y in ys if y is not None]
        if ys:
            m, sd = stats(ys)
            pts.append((t, m)); bands.append((t, max(lo, m - sd), min(hi, m + sd)))
    if not pts: continue
    color = colors.get(method, "#333")
    xy = lambda t, y: f"{L + (W-L)*t/budget:.1f},{T + (H-T-B)*(1-(y-lo)/(hi-lo)):.1f}"
    band = " ".join(xy(t, up) for t, _, up in bands) + " " + " ".join(xy(t, down) for t, down, _ in reversed(bands))
    svg.append(f'<polygon fill="{color}" fill-opacity="0.12" stroke="none" points="{band}"/>')
    path = " ".join(xy(t, y) for t, y in pts)
    svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
    svg.append(f'<text x="{W+10}" y="{T+16+18*idx}" font-size="13" fill="{color}">{method}</text>')
svg.append("</svg>")
with open(os.path.join(out, "curves.svg"), "w") as f: f.write("\n".join(svg))
print(f"\nplot: {os.path.join(out, 'curves.svg')}")
summary = {"domain": domain, "metric": "avg@n", "budget_s": budget, "cpu": cpu, "seeds": seeds,
           "start": base.get("avg@n") if base else None, "methods": summary_methods}
with open(os.path.join(out, "summary.json"), "w") as f: json.dump(summary, f, indent=2)
print(os.path.join(out, "summary.json"))
PY
}
if ((report_only)); then report | tee "$out/table.txt"; exit 0; fi

if ((!skip_setup)); then scripts/setup.sh; fi
build_dir=${DISTIL_BUILD_DIR:-build}
if ((!skip_build)); then build_binaries "$build_dir"; fi
locate_binaries compare.sh "$build_dir"

if [ -z "$train_tasks$eval_tasks" ]; then
  "$DISTIL_DEMO" data --out "$out/data" --recipe "$recipe"
  train_tasks=$out/data/train.jsonl; eval_tasks=$out/data/eval.jsonl
fi
for f in "$train_tasks" "$eval_tasks"; do [ -f "$f" ] || { echo "compare.sh: task file '$f' missing (give both --train-tasks and --eval-tasks)" >&2; exit 2; }; done

train_pid=""
cleanup() {
  [ -n "$train_pid" ] && kill -TERM "$train_pid" 2>/dev/null && wait "$train_pid" 2>/dev/null
  [ -n "${env_pid:-}" ] && kill -TERM "$env_pid" 2>/dev/null && wait "$env_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
start_env_server compare.sh "$port" "$out/distil-env.log" "$train_tasks" "$eval_tasks"

common=(--config "$config" "${overrides[@]}" --set "env.endpoints=[\"$endpoint\"]"
        --set "data.train_tasks=[\"$train_tasks\"]" --set "data.eval_tasks=[\"$eval_tasks\"]")
if [ -z "$model_dir" ]; then
  "$DISTIL_DEMO" pretrain "${common[@]}" --recipe "$recipe" --cache runs/cache \
    --path-out "$out/model_path" >/dev/null
  model_dir=$(cat "$out/model_path")
fi
echo "compare.sh: model $model_dir; methods: $methods; seeds: $seeds; budget ${budget}s of training per run"
"$DISTIL_EVAL" "${common[@]}" --model "$model_dir" -o "$out/eval_before.json"

# Sum of the per-step training times recorded so far in a metrics file.
train_seconds() {
  /usr/bin/python3 -S -c '
import json, sys
total = 0.0
try:
    for line in open(sys.argv[1]):
        try: r = json.loads(line)
        except ValueError: continue
        if isinstance(r.get("time"), dict): total += float(r["time"].get("total", 0.0))
except OSError: pass
print(int(total))' "$1"
}

for seed in $seeds; do
  for method in $methods; do
    run=$out/$method-seed$seed
    rm -rf "$run"; mkdir -p "$run"
    echo "[$(date +%H:%M:%S)] $method seed $seed"
    # Many more steps than the budget allows; the loop below stops the run once the budget is
    # spent. Only evaluations recorded within the budget count (see report).
    # shellcheck disable=SC2046  # method_args prints whole --set pairs
    "$DISTIL_TRAIN" train "${common[@]}" --set "model.path=\"$model_dir\"" $(method_args "$method") \
      --set "train.seed=$seed" --set "train.steps=100000" --set "eval.every=$eval_every" \
      --set "checkpoint.every=0" --set "train.progress=false" --set "train.output_dir=\"$run\"" \
      >"$run/stdout.log" 2>"$run/stderr.log" &
    train_pid=$!
    while kill -0 "$train_pid" 2>/dev/null; do
      sleep 2
      (( $(train_seconds "$run/metrics.jsonl") >= budget )) && break
    done
    kill -TERM "$train_pid" 2>/dev/null || true
    wait "$train_pid" 2>/dev/null || true
    train_pid=""
    grep -q '"eval"' "$run/metrics.jsonl" 2>/dev/null || { echo "  no evaluation recorded; stderr tail:"; tail -5 "$run/stderr.log"; }
  done
done
report | tee "$out/table.txt"
