#!/usr/bin/env bash
# The side-by-side table: rmt (the library's path and the authors' op sequence, bench_models) and
# the authors' own model (PyTorch eager and ONNX Runtime, anchors.py), on the same threads and under
# the same load, one row per implementation, the two programs run alternately for every setting.
#
#   benchmarks/compare.sh --official-repo DIR [--build build] [--model rmt_s] [--batches "1 16"]
#                         [--threads "1 2"] [--contend "0 1"] [--min-seconds 10] [--rounds 1]
#                         [--no-anchors]
#
# DIR: a clone of the authors' repository (anchors.py imports their model from it). Defaults: RMT-S
# at 224x224, float32, batch 1 and 16, 1 and 2 threads, quiet and with one busy process. Then, with
# one busy process and the default thread count, rmt's path again with the OpenMP wait policies a
# user may choose (libgomp's own default spin count, 10000, PASSIVE), and the check of issue 13's
# target: the default settings under one busy process against the quiet 1-thread throughput.
# Peak memory is measured in the quiet runs only (load does not change it). --rounds N: every
# setting's two programs run alternately N times and each implementation's row is its median round
# (by img/s), so that one slow moment of a shared host flatters neither side; the batch sizes
# alternate inside each round as well. With batch 1 among --batches, each other batch size is also
# timed against batch 1 alternated in one process (bench_models --against-batch 1): the per-image
# ratio under the same conditions. Then a summary of the ratios the issue's targets are stated in.
set -euo pipefail

command_line="$0 $*"
here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(dirname "$here")
official="" build="$repo_root/build" model=rmt_s batches="1 16" threads_list="1 2" contend_list="0 1"
min_seconds=10 anchors=1 rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --official-repo) official=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --batches) batches=$2; shift 2 ;;
    --threads) threads_list=$2; shift 2 ;;
    --contend) contend_list=$2; shift 2 ;;
    --min-seconds) min_seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --no-anchors) anchors=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
done
case "$rounds" in
  ''|*[!0-9]*|0) echo "compare.sh: --rounds '$rounds': expected a positive whole number" >&2; exit 1 ;;
esac
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
[ "$rounds" = 1 ] || echo "# every row: the median of $rounds rounds (by img/s), the programs alternating in each round"
# rmt's default spin count, from the header that defines it (rmt/runtime/wait_policy.h).
rmt_spincount=$(sed -n 's/.*kDefaultSpinCountEntry\[\] = "GOMP_SPINCOUNT=\([0-9]*\)".*/\1/p' \
                "$here/../include/rmt/runtime/wait_policy.h")
[ -n "$rmt_spincount" ] || { echo "compare.sh: no kDefaultSpinCountEntry in $here/../include/rmt/runtime/wait_policy.h" >&2; exit 1; }
policy="rmt's default (GOMP_SPINCOUNT=$rmt_spincount)"
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
round_rows=$(mktemp)
bench_out=$(mktemp)
ratios=$(mktemp)  # bench_models' "# per image" lines: batch N against batch 1 in one process
trap 'rm -f "$rows" "$round_rows" "$bench_out" "$ratios"' EXIT
has_batch_one=0
for batch in $batches; do [ "$batch" != 1 ] || has_batch_one=1; done
# The median row (by img/s, column 8) of each implementation and batch size in round_rows, in
# first-seen order.
median_rows() {
  awk -F'|' '
    { path = $3 "|" $5; if (!(path in count)) order[++paths] = path; line[path, ++count[path]] = $0; speed[path, count[path]] = $8 + 0 }
    END {
      for (p = 1; p <= paths; ++p) {
        path = order[p]; n = count[path]
        for (i = 1; i <= n; ++i) rank[i] = i
        for (i = 1; i <= n; ++i) for (j = i + 1; j <= n; ++j)
          if (speed[path, rank[j]] < speed[path, rank[i]]) { t = rank[i]; rank[i] = rank[j]; rank[j] = t }
        print line[path, rank[int((n + 1) / 2)]]
      }
    }' "$round_rows"
}
for contend in $contend_list; do
  for threads in $threads_list; do
    memory=""
    [ "$contend" = 0 ] || memory="--no-memory"
    : > "$round_rows"
    # Batch sizes alternate inside each round too: batch 16 per image against batch 1 is a target,
    # so both are measured in the same minutes of a shared host.
    for round in $(seq "$rounds"); do
      for batch in $batches; do
        against=""
        [ "$batch" = 1 ] || [ "$has_batch_one" = 0 ] || against="--against-batch 1"
        "$bench" --models "$model" --batches "$batch" --dense "" --train none --threads "$threads" \
                 --contend "$contend" --min-seconds "$min_seconds" $memory $against > "$bench_out"
        grep '^| ' "$bench_out" | grep -v '^| model' >> "$round_rows" || true
        grep '^# per image: ' "$bench_out" >> "$ratios" || true
        if [ "$anchors" = 1 ]; then
          python3 "$here/anchors.py" --official-repo "$official" --model "$model" --batches "$batch" \
                  --threads "$threads" --contend "$contend" --min-seconds "$min_seconds" \
                  --gflops "$gflops" $memory | grep '^| ' >> "$round_rows"
        fi
      done
    done
    median_rows | tee -a "$rows"
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
  for policy in "GOMP_SPINCOUNT=300000" "GOMP_SPINCOUNT=2000" "GOMP_SPINCOUNT=1000" "OMP_WAIT_POLICY=PASSIVE"; do
    env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$policy" "$bench" --models "$model" --batches "$batch" \
        --dense "" --train none --paths rmt --contend 1 --min-seconds "$min_seconds" --no-memory \
        --tag "$policy" | grep '^| ' | grep -v '^| model'
  done
  # The authors' eager model with rmt's spin count: how much of its loss under load is the policy.
  if [ "$anchors" = 1 ]; then
    python3 "$here/anchors.py" --official-repo "$official" --model "$model" --batches "$batch" \
            --threads "$default_threads" --contend 1 --min-seconds "$min_seconds" --gflops "$gflops" \
            --no-memory --paths eager --spincount "$rmt_spincount" --tag "GOMP_SPINCOUNT=$rmt_spincount" | grep '^| '
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

# The ratios of the targets, from the rows above: rmt against each of the authors' paths, and
# batch 16 against batch 1 per image: from the rows (separate processes) and alternated in one
# process (bench_models --against-batch 1; the median of the rounds' medians).
echo
awk -F'|' -v ratios="$ratios" '
  BEGIN {  # the "# per image" lines: batch N vs batch 1, T threads, K busy: R x
    while ((getline l < ratios) > 0) {
      if (!match(l, /batch [0-9]+ vs batch 1, [0-9]+ threads, [0-9]+ busy: [0-9.]+x/)) continue
      split(substr(l, RSTART, RLENGTH), w, /[ ,:x]+/)
      key = w[2] "|" w[6] "|" w[8]; pairs[key, ++n_pairs[key]] = w[10] + 0
    }
  }
  { path = $3; gsub(/ /, "", path); key = $5 + 0 "|" $6 + 0 "|" $7 + 0; speed[path, key] = $8 + 0; f = $12; gsub(/ /, "", f); floor_share[path, key] = f; keys[key] = 1 }
  END {
    for (key in keys) {
      split(key, k, "|")
      if (!((("rmt"), key) in speed)) continue
      r = speed["rmt", key]
      line = sprintf("Batch %s, %s threads, %s busy: rmt %.2f img/s (%s of floor)", k[1], k[2], k[3], r, floor_share["rmt", key])
      if (("authors-onnxruntime", key) in speed && speed["authors-onnxruntime", key] > 0)
        line = line sprintf(", %.2fx ONNX Runtime", r / speed["authors-onnxruntime", key])
      if (("authors-eager", key) in speed && speed["authors-eager", key] > 0)
        line = line sprintf(", %.2fx eager", r / speed["authors-eager", key])
      one = "1|" k[2] "|" k[3]
      if (k[1] != 1 && (("rmt", one) in speed) && speed["rmt", one] > 0)
        line = line sprintf(", %.2fx batch 1 per image (rows)", r / speed["rmt", one])
      if (n_pairs[key] > 0) {
        n = n_pairs[key]
        delete v
        for (i = 1; i <= n; ++i) v[i] = pairs[key, i]
        for (i = 1; i <= n; ++i) for (j = i + 1; j <= n; ++j) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        line = line sprintf(", %.3fx alternated in one process (median of %d rounds, %.3f-%.3f)", v[int((n + 1) / 2)], n, v[1], v[n])
      }
      print line
    }
  }' "$rows" | sort -t, -k1,1 -k2,2 -k3,3
