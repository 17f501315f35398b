#!/usr/bin/env bash
# Env-server throughput and latency with wrk, printed as a table. Not a test: numbers depend on
# the machine. The reference row (GET /healthz: HTTP only, no JSON, no worker pool, no grading)
# runs in the same session so the grading rows can be read as ratios of it.
#   bench/env_server/run_bench.sh [DISTIL_ENV_BINARY] [SECONDS]
# Defaults: build/env_server/distil-env, 10 s per row. Needs wrk (scripts/setup.sh --bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-build/env_server/distil-env}"
seconds="${2:-10}"
connections="${CONNECTIONS:-64}"
wrk_threads="${WRK_THREADS:-2}"
workers="${WORKERS:-0}"
command -v wrk >/dev/null || { echo "run_bench: wrk is not installed (scripts/setup.sh --bench)" >&2; exit 1; }
[[ -x "$bin" ]] || { echo "run_bench: no server binary at $bin" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$bin" serve --tasks tests/env_server/data/tasks.jsonl --port 0 --workers "$workers" \
  --access-log "$work/access.log" >"$work/stdout" 2>"$work/stderr" &
server_pid=$!
for _ in $(seq 1 200); do grep -q "listening on" "$work/stdout" 2>/dev/null && break; sleep 0.05; done
line="$(grep "listening on" "$work/stdout")" || { cat "$work/stderr" >&2; exit 1; }
port="$(sed -E 's/.*127\.0\.0\.1:([0-9]+).*/\1/' <<<"$line")"
pool="$(curl -sS "http://127.0.0.1:$port/v1/limits" | sed -E 's/.*"workers":([0-9]+).*/\1/')"
base="http://127.0.0.1:$port"
echo "server: $line" >&2

json_body() { /usr/bin/python3 -S -c 'import json,sys; print(json.dumps({"task_id": sys.argv[1], "response": sys.argv[2]}))' "$1" "$2"; }

# CPU seconds (user + system) the server process has used so far: with the request count this gives
# the server's CPU cost per request, which does not depend on what else the machine is running.
server_cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$server_pid/stat"; }

# run_row NAME CONNECTIONS THREADS URL [BODY EXPECT]: prints "name|conns|rps|p50|p99|errors|wrong|cpu_us"
run_row() {
  local name="$1" conns="$2" threads="$3" url="$4" body="${5:-}" expect="${6:-}" out cpu_before cpu_after
  cpu_before="$(server_cpu_s)"
  if [[ -n "$body" ]]; then
    out="$(BODY="$body" EXPECT_VERDICT="$expect" wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency \
             -s bench/env_server/post_feedback.lua "$url")"
  else
    out="$(wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency "$url")"
  fi
  cpu_after="$(server_cpu_s)"
  echo "$out" >>"$work/wrk.txt"
  local requests cpu_us
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  cpu_us="$(awk -v a="$cpu_before" -v b="$cpu_after" -v n="$requests" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / n : 0) }')"
  local rps p50 p99 non2xx sock wrong
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
  p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  sock="$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")"
  wrong="$(awk '/WRONG_VERDICTS/ {print $2}' <<<"$out")"
  echo "$name|$conns|$rps|$p50|$p99|$(( ${non2xx:-0} + ${sock:-0} ))|${wrong:--}|$cpu_us"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
rows+=("$(run_row "reference: GET /healthz" "$connections" "$wrk_threads" "$base/healthz")")
rows+=("$(run_row "math: POST /v1/feedback (accepted)" "$connections" "$wrk_threads" "$base/v1/feedback" \
  "$(json_body math-product 'So 6 * 7 = 42 and the answer is \boxed{42}.')" accepted)")
rows+=("$(run_row "math: POST /v1/feedback (wrong)" "$connections" "$wrk_threads" "$base/v1/feedback" \
  "$(json_body math-half 'The answer is \boxed{0.75}.')" wrong_answer)")
code_conns="$pool"
rows+=("$(run_row "code: POST /v1/feedback (3 tests, python)" "$code_conns" 1 "$base/v1/feedback" \
  "$(json_body code-sum $'```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```')" accepted)")

ref_rps="$(cut -d'|' -f3 <<<"${rows[0]}")"
printf '\nenv-server on %s (%s CPUs), %s s per row, wrk %s threads, server pool %s workers\n' \
  "$(uname -n)" "$(nproc)" "$seconds" "$wrk_threads" "$pool"
printf 'load average before the run: %s\n' "$load_before"
printf '%-42s %6s %11s %9s %9s %7s %7s %9s %12s\n' "row" "conns" "req/s" "p50" "p99" "errors" "wrong" "vs ref" "server CPU/req"
for row in "${rows[@]}"; do
  IFS='|' read -r name conns rps p50 p99 errors wrong cpu_us <<<"$row"
  ratio="$(awk -v a="$rps" -v b="$ref_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
  printf '%-42s %6s %11s %9s %9s %7s %7s %8sx %10s us\n' "$name" "$conns" "$rps" "$p50" "$p99" "$errors" "$wrong" "$ratio" "$cpu_us"
done
logged="$(wc -l <"$work/access.log")"
printf 'access log: %s JSON lines written during the run\n' "$logged"
