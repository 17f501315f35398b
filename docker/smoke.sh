#!/usr/bin/env bash
# Builds the env-server image with podman, starts it, grades a math and a code task through the
# published port, checks /readyz, stops it with SIGTERM and checks the exit status. Not part of
# CTest (minutes: it compiles the server inside the image).
#   docker/smoke.sh                 build + run
#   SMOKE_SKIP_BUILD=1 docker/smoke.sh   reuse the image built last time
# Needs: root, podman + buildah + runc (scripts/setup.sh --container), the Debian mirror for
# debootstrap and apt inside the build.
set -euo pipefail
cd "$(dirname "$0")/.."
image="localhost/distil-env:smoke"
name="distil-env-smoke-$$"
port="${SMOKE_PORT:-18080}"

log() { printf 'smoke: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

docker/make-base-image.sh

if [[ -z "${SMOKE_SKIP_BUILD:-}" ]]; then
  # A clean build context: the tracked files only (no build directories, no .git).
  context="$(mktemp -d /var/tmp/distil-context.XXXXXX)"
  trap 'rm -rf "$context"' EXIT
  git ls-files -z --cached | tar --null -T - -c | tar -x -C "$context"
  log "building $image (multi-stage, --isolation chroot)"
  start=$(date +%s)
  podman build --isolation chroot --network host -f docker/env-server.Dockerfile -t "$image" "$context" >&2
  log "built in $(( $(date +%s) - start )) s; size $(podman image inspect "$image" --format '{{.Size}}' | numfmt --to=iec)"
fi

# This host's runtime cannot raise rlimits above the defaults it computes (runc: "error setting
# rlimit ... operation not permitted"); explicit, modest limits work everywhere.
run_opts=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

# What the runtime image must not contain.
if podman run --rm "${run_opts[@]}" --entrypoint /bin/sh "$image" -c 'ls /usr/lib/x86_64-linux-gnu | grep -qi torch'; then
  fail "the runtime image contains LibTorch"
fi
podman run --rm "${run_opts[@]}" --entrypoint /usr/bin/python3 "$image" -c 'print("python ok")' >/dev/null ||
  fail "python3 missing in the runtime image"
[[ "$(podman image inspect "$image" --format '{{.Config.User}}')" == "10001:10001" ]] || fail "image does not run as uid 10001"

cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; rm -rf "${context:-/nonexistent-smoke}"; }
trap cleanup EXIT
log "starting $name on 127.0.0.1:$port"
podman run -d "${run_opts[@]}" --name "$name" -p "127.0.0.1:$port:8080" \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt unmask=ALL \
  "$image" >/dev/null

base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { podman logs "$name" >&2; fail "/healthz never answered"; }

readyz="$(curl -sS "$base/readyz")"
log "readyz: $readyz"
echo "$readyz" | grep -q '"ready":true' || { podman logs "$name" >&2; fail "/readyz is not ready"; }

grade() {  # task_id, response, expected verdict
  local body result
  body="$(python3 -c 'import json,sys; print(json.dumps({"task_id": sys.argv[1], "response": sys.argv[2]}))' "$1" "$2")"
  result="$(curl -sS -X POST -H 'Content-Type: application/json' --data-binary "$body" "$base/v1/feedback")"
  log "$1 -> $result"
  echo "$result" | grep -q "\"verdict\":\"$3\"" || fail "$1: expected verdict $3"
}
grade math-product 'The product is \boxed{42}.' accepted
grade math-product 'The product is \boxed{41}.' wrong_answer
grade code-sum $'```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```' accepted
grade code-sum $'```python\nprint(0)\n```' wrong_answer

log "stopping (SIGTERM)"
podman stop -t 30 "$name" >/dev/null
status="$(podman inspect "$name" --format '{{.State.ExitCode}}')"
podman logs "$name" 2>&1 | tail -3 >&2
[[ "$status" == "0" ]] || fail "exit status $status after SIGTERM"
log "PASS: image $image built, served math and code grading on port $port, drained and exited 0"
