#!/usr/bin/env bash
# Checks that each PROGRAM loads exactly one libc10, and every LibTorch library (libtorch*,
# libc10*, libcaffe2*, libshm*, libkineto*) from one folder. A build that linked two LibTorches
# (the wheel's, and Debian's libtorch-dev in /usr/lib) loaded libc10.so and libc10.so.1.13 and
# crashed in malloc.
#
#   scripts/check-one-libtorch.sh PROGRAM...
#
# Each program is looked at twice: the dynamic loader's resolution of its dependencies
# (LD_TRACE_LOADED_OBJECTS, what ldd prints; nothing runs), and a real run (--help; test programs
# --gtest_list_tests; fuzz targets -help=1) under LD_DEBUG=libs, which lists every library the
# process initialized, including any it opened while starting. Exit status: 0 all good, 1 not.
set -uo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 PROGRAM..." >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/rmt-libtorch.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0

for exe in "$@"; do
  name=$(basename "$exe")
  if [ ! -x "$exe" ]; then
    echo "check-one-libtorch: $exe: not built" >&2
    status=1
    continue
  fi
  # What the loader resolves (the "=> /path" column of ldd), without running the program.
  LD_TRACE_LOADED_OBJECTS=1 "$exe" 2>&1 | awk '$2 == "=>" && $3 ~ /^\// {print $3}' >"$work/libs"
  case $name in
    test_*) args=(--gtest_list_tests) ;;
    fuzz_*) args=(-help=1) ;;
    *) args=(--help) ;;
  esac
  # What a running process really loaded ("calling init: /path" for each library).
  rm -f "$work"/trace.*
  LD_DEBUG=libs LD_DEBUG_OUTPUT="$work/trace" "$exe" "${args[@]}" >"$work/out" 2>&1
  rc=$?
  cat "$work"/trace.* 2>/dev/null | sed -n 's/.*calling init: //p' >>"$work/libs"
  if [ $rc -ne 0 ]; then
    echo "check-one-libtorch: $name ${args[*]} exited with status $rc:" >&2
    tail -n 5 "$work/out" >&2
    status=1
  fi

  : >"$work/torch"
  while read -r lib; do
    [ -e "$lib" ] && readlink -f "$lib"
  done <"$work/libs" | sort -u | while read -r lib; do
    case $(basename "$lib") in
      libtorch*|libc10*|libcaffe2*|libshm*|libkineto*) echo "$lib" ;;
    esac
  done >"$work/torch"
  c10=$(grep -E '/libc10\.so(\.[0-9.]+)?$' "$work/torch" || true)
  dirs=$(xargs -r -n1 dirname <"$work/torch" | sort -u)
  n_c10=$(printf '%s' "$c10" | grep -c . || true)
  n_dirs=$(printf '%s' "$dirs" | grep -c . || true)
  if [ "$n_c10" -ne 1 ] || [ "$n_dirs" -ne 1 ]; then
    echo "check-one-libtorch: $name loads $n_c10 libc10 and LibTorch libraries from $n_dirs folders:" >&2
    sed 's/^/    /' "$work/torch" >&2
    status=1
  else
    echo "check-one-libtorch: $name: one libc10 ($c10)"
  fi
done
exit $status
