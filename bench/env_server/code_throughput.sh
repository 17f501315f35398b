#!/usr/bin/env bash
# Code-grading throughput of the env server under concurrency (issue 13, item 7): a Python task
# with 4 stdin tests, POSTed by wrk over 64 connections, with warm fork servers (the default) and
# without (--warm-fork-servers 0: a fork server started per grading, as before), the same binary,
# alternating rounds; medians and the ratio, the CPU model and the load average. Not a test.
#   bench/env_server/code_throughput.sh [DISTIL_ENV_BINARY] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-build/env_server/distil-env}"
seconds="${2:-8}"
rounds="${3:-3}"
connections="${CONNECTIONS:-64}"
command -v wrk >/dev/null || { echo "code_throughput: wrk is not installed (scripts/setup.sh --bench)" >&2; exit 1; }
[[ -x "$bin" ]] || { echo "code_throughput: no server binary at $bin" >&2; exit 1; }
work="$(mktemp -d)"
server_pid=""
stop_server() { if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; fi; }
trap 'stop_server; rm -rf "$work"' EXIT

/usr/bin/python3 -S - "$work/tasks.jsonl" <<'PY'
import json, sys
tests = []
for i in range(4):
    n = 50 * (i + 1)
    nums = [(k * 37) % 11 for k in range(1, n + 1)]
    tests.append({"input": "%d\n%s\n" % (n, " ".join(map(str, nums))), "output": "%d\n" % sum(nums), "type": "stdin"})
with open(sys.argv[1], "w") as f:
    f.write(json.dumps({"id": "code-sum4", "domain": "code", "prompt": "Sum the numbers after the count.", "tests": tests}) + "\n")
PY
body="$(/usr/bin/python3 -S -c 'import json; print(json.dumps({"task_id": "code-sum4", "response": "```python\nimport sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums[1:]))\n```"}))')"

# run_round WARM: one server, one wrk run; prints "rps p50 p99 non2xx wrong"
run_round() {
  trap stop_server EXIT  # this runs in a subshell: the server is its child
  "$bin" serve --tasks "$work/tasks.jsonl" --port 0 --warm-fork-servers "$1" --access-log off >"$work/stdout" 2>"$work/stderr" &
  server_pid=$!
  # A start can take many seconds right after a round of per-grading fork servers: each made its
  # own network namespace, and the kernel tears those down in the background while holding the
  # lock a new one (the new server's sandbox probe) needs.
  for _ in $(seq 1 2400); do grep -q "listening on" "$work/stdout" 2>/dev/null && break; sleep 0.05; done
  local port out
  port="$(sed -nE 's/.*127\.0\.0\.1:([0-9]+).*/\1/p' "$work/stdout")"
  [[ -n "$port" ]] || { echo "code_throughput: the server did not start:" >&2; cat "$work/stdout" "$work/stderr" >&2; exit 1; }
  out="$(BODY="$body" EXPECT_VERDICT=accepted wrk -t2 -c"$connections" -d"${seconds}s" --latency \
           -s bench/env_server/post_feedback.lua "http://127.0.0.1:$port/v1/feedback")"
  stop_server
  awk '/Requests\/sec/ {rps=$2} $1 == "50%" {p50=$2} $1 == "99%" {p99=$2} /Non-2xx/ {bad=$NF}
       /WRONG_VERDICTS/ {wrong=$2} END {printf "%s %s %s %d %d\n", rps, p50, p99, bad, wrong}' <<<"$out"
}

model="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -a cold warm
for r in $(seq 1 "$rounds"); do
  cold+=("$(run_round 0)")
  warm+=("$(run_round 8)")
  echo "round $r: cold ${cold[-1]} | warm ${warm[-1]}" >&2
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2)}'; }
col() { local i="$1"; shift; for row in "$@"; do echo "$row" | cut -d' ' -f"$i"; done; }
cold_rps="$(col 1 "${cold[@]}" | median)"; warm_rps="$(col 1 "${warm[@]}" | median)"
printf '\nenv-server code throughput: CPU %s, %s CPUs, %s connections, %s s x %s alternating rounds\n' \
  "$model" "$(nproc)" "$connections" "$seconds" "$rounds"
printf 'load average before %s, after %s\n' "$load_before" "$load_after"
printf '%-44s %10s   %s\n' "server" "median r/s" "per round: req/s p50 p99 non-2xx wrong-verdicts"
printf '%-44s %10s   %s\n' "fork server per grading (--warm-fork-servers 0)" "$cold_rps" "$(IFS='|'; echo "${cold[*]}")"
printf '%-44s %10s   %s\n' "warm fork servers (default, 8)" "$warm_rps" "$(IFS='|'; echo "${warm[*]}")"
awk -v a="$warm_rps" -v b="$cold_rps" 'BEGIN { printf "ratio warm / per-grading: %.2fx (target >= 3x)\n", (b > 0 ? a / b : 0) }'
