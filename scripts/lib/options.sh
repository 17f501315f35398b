# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are read by the calling script
# The options scripts/demo.sh and scripts/compare.sh share, parsed once here (sourced, run from
# the repository root). Each script's --help (its header comment) documents them:
#   --domain NAME, --config FILE, --set KEY=VALUE (repeatable), --model DIR, --train-tasks F,
#   --eval-tasks F, --out DIR, --port N, --skip-setup, --skip-build, -h/--help
#
# The calling script sets `port` (its default) before parse_options, and may define
# script_option to take its own options: called with the remaining arguments, it sets
# option_shift to the number it used and returns 0, or returns 1 for an option it does not know.
# After parse_options SCRIPT "$@": domain, config, overrides (an array of --set KEY=VALUE),
# model_dir, train_tasks, eval_tasks, out (empty unless given), port, skip_setup, skip_build, and
# from the domain its pretraining recipe and, unless --config was given, its training config.

domain=code
config=""
overrides=()
model_dir=""
train_tasks=""
eval_tasks=""
out=""
skip_setup=0
skip_build=0
recipe=""
options_script=""

# needs_value OPTION ARGS...: exits with a clear message unless OPTION is followed by a value.
needs_value() {
  (($# >= 2)) || { echo "$options_script: $1 needs a value (see --help)" >&2; exit 2; }
}

# print_help: the calling script's header comment (its lines after #!, up to the first other line).
print_help() {
  awk 'NR == 1 { next } /^#/ { print; next } { exit }' "$0"
}

# parse_options SCRIPT ARGS...: parses the command line of SCRIPT (its name, for messages).
parse_options() {
  options_script=$1
  shift
  while (($#)); do
    case "$1" in
      --domain|--config|--set|--model|--train-tasks|--eval-tasks|--out|--port)
        needs_value "$@"
        case "$1" in
          --domain) domain=$2 ;;
          --config) config=$2 ;;
          --set) overrides+=(--set "$2") ;;
          --model) model_dir=$2 ;;
          --train-tasks) train_tasks=$2 ;;
          --eval-tasks) eval_tasks=$2 ;;
          --out) out=$2 ;;
          --port) port=$2 ;;
        esac
        shift 2 ;;
      --skip-setup) skip_setup=1; shift ;;
      --skip-build) skip_build=1; shift ;;
      -h|--help) print_help; exit 0 ;;
      *)
        option_shift=0
        if declare -F script_option >/dev/null && script_option "$@"; then
          shift "$option_shift"
        else
          echo "$options_script: unknown option '$1' (see --help)" >&2
          exit 2
        fi ;;
    esac
  done
  case "$domain" in
    code) recipe=configs/demo_code_pretrain.yaml; : "${config:=configs/demo_code.yaml}" ;;
    arithmetic) recipe=configs/demo_pretrain.yaml; : "${config:=configs/demo.yaml}" ;;
    *) echo "$options_script: --domain must be code or arithmetic, got '$domain'" >&2; exit 2 ;;
  esac
  [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || { echo "$options_script: --port must be 1..65535" >&2; exit 2; }
}
