#!/usr/bin/env bash
# Builds the trainer image with podman and runs a tiny real job in it: the demo's tasks, a tiny
# model pretrained for a few steps, two SFT steps on reference solutions (no env server needed);
# then checks metrics.jsonl, the checkpoint and the TensorBoard event files (read on the host by
# tests/trainer/tfevents_peer.py, the real crc32c + protobuf libraries, when they are installed).
# Not part of CTest's default run (~15 min on 2 cores: it compiles the trainer inside the image);
# CTest's trainer_container_smoke (label slow: scripts/test.sh --all) runs it.
#   docker/trainer-smoke.sh                      build + run
#   SMOKE_SKIP_BUILD=1 docker/trainer-smoke.sh   reuse the image built last time
#   BUILD_JOBS=2 docker/trainer-smoke.sh         fewer compile jobs inside the build
# Needs: root, podman + buildah + runc (scripts/setup.sh --container), the Debian mirror for
# debootstrap and apt inside the build.
set -euo pipefail
cd "$(dirname "$0")/.."
image="localhost/distil-train:smoke"

log() { printf 'trainer-smoke: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

if ! command -v podman >/dev/null || [[ $(id -u) -ne 0 ]]; then
  log "SKIPPED: needs root and podman (scripts/setup.sh --container)"
  exit 77  # CTest's SKIP_RETURN_CODE
fi
docker/make-base-image.sh

work="$(mktemp -d /var/tmp/distil-trainer-smoke.XXXXXX)"
context=""
cleanup() { rm -rf "$work" ${context:+"$context"}; }
trap cleanup EXIT

if [[ -z "${SMOKE_SKIP_BUILD:-}" ]]; then
  # A clean build context: the tracked files only (no build directories, no .git).
  context="$(mktemp -d /var/tmp/distil-context.XXXXXX)"
  git ls-files -z --cached | tar --null -T - -c | tar -x -C "$context"
  log "building $image (multi-stage, --isolation chroot)"
  start=$(date +%s)
  podman build --isolation chroot --network host --build-arg BUILD_JOBS="${BUILD_JOBS:-}" \
    -f docker/trainer.Dockerfile -t "$image" "$context" >&2
  log "built in $(( $(date +%s) - start )) s; size $(podman image inspect "$image" --format '{{.Size}}' | numfmt --to=iec)"
fi

# As in docker/smoke.sh: this host's runtime cannot raise rlimits above the defaults it computes.
run_opts=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

# What the runtime image must not contain: a compiler or LibTorch's headers.
if podman run --rm "${run_opts[@]}" --entrypoint /bin/sh "$image" -c 'command -v g++ || command -v c++ || ls /usr/include/torch' >/dev/null 2>&1; then
  fail "the runtime image contains a compiler or LibTorch headers"
fi
[[ "$(podman image inspect "$image" --format '{{.Config.User}}')" == "10001:10001" ]] || fail "image does not run as uid 10001"
podman run --rm "${run_opts[@]}" "$image" --help | grep -q "train" || fail "distil-train --help lists no train command"
podman run --rm "${run_opts[@]}" --entrypoint /usr/local/bin/distil-eval "$image" --help >/dev/null ||
  fail "distil-eval --help failed"

chmod 0777 "$work"  # the image runs as uid 10001
train() { podman run --rm "${run_opts[@]}" -e OMP_NUM_THREADS=2 -v "$work:/runs" "$image" "$@"; }
demo() { podman run --rm "${run_opts[@]}" -e OMP_NUM_THREADS=2 -v "$work:/runs" --entrypoint /usr/local/bin/distil-demo "$image" "$@"; }
recipe=/opt/distil/configs/demo_pretrain.yaml
log "distil-demo data"
demo data --recipe "$recipe" --out /runs/data --train 32 --eval 8 >&2
log "distil-demo pretrain (a tiny model, 6 steps)"
demo pretrain --recipe "$recipe" --recipe-set steps=6 --recipe-set batch_size=8 --recipe-set warmup_steps=1 \
  --recipe-set hidden_size=32 --recipe-set num_layers=1 --recipe-set intermediate_size=64 \
  --cache /runs/cache --path-out /runs/model-path --accuracy-prompts 2 --accuracy-samples 1 >&2
model="$(cat "$work/model-path")"
log "train: 2 SFT steps on reference solutions from $model"
train train --set "model.path=$model" --set "data.train_tasks=[/runs/data/train.jsonl]" \
  --set algo.objective=sft --set algo.sft_source=reference --set rollout.prompts_per_step=4 \
  --set train.steps=2 --set train.progress=false --set checkpoint.every=0 --set train.output_dir=/runs/run >&2

[[ "$(grep -c '"step":' "$work/run/metrics.jsonl")" == "2" ]] || fail "metrics.jsonl has not 2 step records: $(cat "$work/run/metrics.jsonl")"
[[ -f "$work/run/checkpoint-000002/model.safetensors" ]] || fail "no checkpoint-000002"
events=("$work"/run/events.out.tfevents.*)
[[ -f "${events[0]}" ]] || fail "no TensorBoard event file in the run directory: $(ls "$work/run")"
log "event file: $(basename "${events[0]}") ($(stat -c %s "${events[0]}") bytes)"
if command -v protoc >/dev/null && /usr/bin/python3 -c 'import crc32c, google.protobuf' 2>/dev/null; then
  protoc -I tests/trainer/data --python_out="$work" tests/trainer/data/tensorboard_event.proto
  read_back="$(/usr/bin/python3 tests/trainer/tfevents_peer.py "$work" "${events[0]}")" || fail "the event file does not read back"
  /usr/bin/python3 - "$read_back" "$work/run/metrics.jsonl" <<'PY' || fail "event file and metrics.jsonl disagree"
import json, struct, sys
events = json.loads(sys.argv[1])[0]
records = [json.loads(line) for line in open(sys.argv[2])]
losses = {e["step"]: dict(e["values"])["train/loss"] for e in events if e["what"] == "summary"}
for r in records:
    f32 = struct.unpack("f", struct.pack("f", r["loss"]))[0]
    assert losses[r["step"]] == f32, (r["step"], losses, r["loss"])
print(f"trainer-smoke: train/loss in the event file equals metrics.jsonl at steps {sorted(losses)}", file=sys.stderr)
PY
else
  log "SKIPPED reading the event file back: protoc, python3-protobuf or python3-crc32c missing (scripts/setup.sh)"
fi
log "PASS: image $image ($(podman image inspect "$image" --format '{{.Size}}' | numfmt --to=iec)) ran distil-demo data, distil-demo pretrain and 2 training steps"
