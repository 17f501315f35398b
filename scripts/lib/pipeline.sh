# Shared by scripts/demo.sh and scripts/compare.sh (sourced, run from the repository root; their
# shared options are in scripts/lib/options.sh): build the three binaries, find them, start
# distil-env on loopback and wait until it is healthy.
# Each function takes the calling script's name for its error messages and exits on failure.

# Pinned CPU kernels for every distil-train / distil-eval process (trainer/reproducible.h): the
# same numbers on any x86-64 machine with AVX2+FMA, at some cost in speed. DISTIL_REPRODUCIBLE=0
# lets the kernels follow the CPU.
export DISTIL_REPRODUCIBLE=${DISTIL_REPRODUCIBLE:-1}

# cpu_model: the CPU's model name, printed beside every table of measured numbers.
cpu_model() {
  sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1
}

# build_binaries BUILD_DIR: configure and build distil-env, distil-train, distil-eval and distil-demo.
build_binaries() {
  cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${DISTIL_CMAKE_ARGS:-} >/dev/null
  cmake --build "$1" -j "${DISTIL_JOBS:-$(nproc)}" --target distil-env distil-train distil-eval distil-demo
}

# locate_binaries SCRIPT BUILD_DIR: sets DISTIL_ENV, DISTIL_TRAIN, DISTIL_EVAL and DISTIL_DEMO to absolute paths.
locate_binaries() {
  local script=$1 dir=$2 name var found d
  case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac
  for name in distil-env distil-train distil-eval distil-demo; do
    found=""
    for d in "$dir" "$dir/env_server" "$dir/trainer" "$dir/trainer/demo"; do
      if [ -x "$d/$name" ]; then found=$d/$name; break; fi
    done
    [ -n "$found" ] || { echo "$script: $name not built in $2" >&2; exit 1; }
    var=${name#distil-}
    printf -v "DISTIL_${var^^}" '%s' "$found"
  done
}

# start_env_server SCRIPT PORT LOG TASK_FILE...: starts distil-env on 127.0.0.1:PORT in the
# background (pid in env_pid, URL in endpoint) and waits up to 10 s for /healthz.
start_env_server() {
  local script=$1 port=$2 log=$3
  shift 3
  endpoint=http://127.0.0.1:$port
  "$DISTIL_ENV" serve --tasks "$@" --host 127.0.0.1 --port "$port" --access-log off >"$log" 2>&1 &
  env_pid=$!
  for _ in $(seq 1 100); do
    curl -fsS "$endpoint/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$env_pid" 2>/dev/null || { echo "$script: distil-env exited; its log:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  curl -fsS "$endpoint/healthz" >/dev/null || { echo "$script: distil-env did not become healthy; see $log" >&2; exit 1; }
}
