#!/usr/bin/env bash
# The side-by-side table: rmt (the library's path and the authors' op sequence, bench_models) and
# the authors' own model (PyTorch eager and ONNX Runtime, anchors.py), on the same threads and under
# the same load, one row per implementation, the two programs run alternately for every setting.
#
#   benchmarks/compare.sh --official-repo DIR [--build build] [--model rmt_s] [--batches "1 16"]
#                         [--threads "1 2"] [--contend "0 1"] [--min-seconds 10] [--no-anchors]
#
# DIR: a clone of the authors' repository (anchors.py imports their model from it). Defaults: RMT-S
# at 224x224, float32, batch 1 and 16, 1 and 2 threads, quiet and with one busy process. Then, with
# one busy process and the default thread count, rmt's path again with the OpenMP wait policies a
# user may choose (libgomp's own default spin count, 10000, PASSIVE), and the check of issue 13's
# target: the default settings under one busy process against the quiet 1-thread throughput.
# Peak memory is measured in the quiet runs only (load does not change it).
set -euo pipefail

command_line="$0 $*"
here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(dirname "$here")
official="" build="$repo_root/build" model=rmt_s batches="1 16" threads_list="1 2" contend_list="0 1"
min_seconds=10 anchors=1
while [ $# -gt 0 ]; do
  case "$1" in
    --official-repo) official=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --threads) threads_list=$2; shift 2 ;;
    --contend) contend_list=$2; shift 2 ;;
    --min-seconds) min_seconds=$2; shift 2 ;;
    --no-anchors) anchors=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
done
bench="$build/benchmarks/bench_models"
[ -x "$bench" ] || { echo "compare.sh: $bench not found: build the benchmarks first (or --build DIR)" >&2; exit 1; }
if [ "$anchors" = 1 ] && [ ! -f "$official/classfication_release/RMT.py" ]; then
  echo "compare.sh: --official-repo '$official': expected a clone of the authors' repository (classfication_release/RMT.py); or --no-anchors" >&2
  exit 1
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
torch_version=$(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')
echo "# Side-by-side, $(date -u '+%Y-%m-%d %H:%M UTC'): $cpu, $(nproc) CPUs online, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
echo "# LibTorch/torch $torch_version; command: $command_line"
policy="rmt's default (GOMP_SPINCOUNT=2000)"
[ -z "${GOMP_SPINCOUNT:-}" ] || policy="GOMP_SPINCOUNT=$GOMP_SPINCOUNT"
[ -z "${OMP_WAIT_POLICY:-}" ] || policy="OMP_WAIT_POLICY=$OMP_WAIT_POLICY ${GOMP_SPINCOUNT:+GOMP_SPINCOUNT=$GOMP_SPINCOUNT}"
echo "# wait policy of rmt's rows: $policy; the authors' rows: the environment's (PyTorch's default spins)"
# The floor of every row uses bench_models' FLOP count.
gflops=$("$bench" --models "$model" --batches "" --dense "" --train none --min-seconds 0 --repeats 1 |
         sed -n "s/^# $model: \([0-9.]*\) GFLOP per image.*/\1/p")
echo "# $model: $gflops GFLOP per image (2 x rmt::summarize's MACs); GEMM floor = sgemm rate (1024^3 torch.mm, same threads, same load) / FLOPs"
echo
echo "| model | path | input | batch | threads | busy procs | img/s | peak RSS MiB | sgemm GFLOP/s | GEMM floor img/s | of floor |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
for contend in $contend_list; do
  for threads in $threads_list; do
    for batch in $batches; do
      memory=""
      [ "$contend" = 0 ] || memory="--no-memory"
      "$bench" --models "$model" --batches "$batch" --dense "" --train none --threads "$threads" \
               --contend "$contend" --min-seconds "$min_seconds" $memory | grep '^| ' | grep -v '^| model' | tee -a "$rows"
      if [ "$anchors" = 1 ]; then
        python3 "$here/anchors.py" --official-repo "$official" --model "$model" --batches "$batch" \
                --threads "$threads" --contend "$contend" --min-seconds "$min_seconds" \
                --gflops "$gflops" $memory | grep '^| ' | tee -a "$rows"
      fi
    done
  done
done

# The default thread count under one busy process, with the wait policies a user may set.
default_threads=$(python3 -c 'import os; print(len(os.sched_getaffinity(0)))')
echo
echo "Wait policies, one busy process, $default_threads threads (rmt's path; the authors' eager model with rmt's spin count):"
echo
echo "| model | path | input | batch | threads | busy procs | img/s | peak RSS MiB | sgemm GFLOP/s | GEMM floor img/s | of floor |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for batch in $batches; do
  for policy in "GOMP_SPINCOUNT=300000" "GOMP_SPINCOUNT=10000" "GOMP_SPINCOUNT=1000" "OMP_WAIT_POLICY=PASSIVE"; do
    env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$policy" "$bench" --models "$model" --batches "$batch" \
        --dense "" --train none --paths rmt --contend 1 --min-seconds "$min_seconds" --no-memory \
        --tag "$policy" | grep '^| ' | grep -v '^| model'
  done
  # The authors' eager model with rmt's spin count: how much of its loss under load is the policy.
  if [ "$anchors" = 1 ]; then
    python3 "$here/anchors.py" --official-repo "$official" --model "$model" --batches "$batch" \
            --threads "$default_threads" --contend 1 --min-seconds "$min_seconds" --gflops "$gflops" \
            --no-memory --paths eager --spincount 2000 --tag "GOMP_SPINCOUNT=2000" | grep '^| '
  fi
done

# Issue 13's target: default settings (no --threads, rmt's wait policy) with one busy process keep
# >= 70% of the quiet 1-thread throughput.
echo
for batch in $batches; do
  quiet=$(awk -F'|' -v b="$batch" '$3 ~ /^ rmt $/ && $5+0 == b && $6+0 == 1 && $7+0 == 0 {print $8+0; exit}' "$rows")
  loaded=$(awk -F'|' -v b="$batch" -v t="$default_threads" '$3 ~ /^ rmt $/ && $5+0 == b && $6+0 == t && $7+0 == 1 {print $8+0; exit}' "$rows")
  if [ -n "$quiet" ] && [ -n "$loaded" ]; then
    awk -v q="$quiet" -v l="$loaded" -v b="$batch" -v t="$default_threads" 'BEGIN {
      printf "Batch %s: default settings (%s threads) with 1 busy process %.2f img/s = %.0f%% of the quiet 1-thread %.2f img/s (target >= 70%%)\n", b, t, l, 100 * l / q, q }'
  fi
done
