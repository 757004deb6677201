#!/usr/bin/env bash
# Instructions per call, counted by valgrind's callgrind: exact and repeatable on a
# shared machine where CPU time is not. Each setup runs `overhead --profile SETUP` twice
# (LOW and HIGH calls, against the fake servers in a child process that valgrind does
# not trace); (I(HIGH) - I(LOW)) / (HIGH - LOW) leaves out start-up and warm-up.
#
#   benches/callgrind.sh [--calling-task | --first-chunk burst|paced | --stream burst|paced] [SETUP...]
#
# Default: every thread of the bench process (the caller, Tokio's workers, the batch
# processor and the export runtime). --calling-task counts only `Caller::call` (the
# caller's own work); --first-chunk counts a stream up to its first text chunk;
# --stream counts whole streams. SETUPs: 1_floor 2_untraced 3_traced_otlp
# 4_traced_tracia (default: all). Profiles are left in target/callgrind/ for
# callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

toggle=() stream=() low=1000 high=3000
case "${1:-}" in
  --calling-task) toggle=(--toggle-collect='*Caller::call*'); shift ;;
  --first-chunk) toggle=(--toggle-collect='*UntilFirstChunk*'); stream=(BENCH_PROFILE_STREAMS="$2"); low=200 high=600; shift 2 ;;
  --stream) stream=(BENCH_PROFILE_STREAMS="$2"); low=200 high=600; shift 2 ;;
esac
setups=("$@")
[ ${#setups[@]} -gt 0 ] || setups=(1_floor 2_untraced 3_traced_otlp 4_traced_tracia)

bin=$(cargo bench --bench overhead --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
out=target/callgrind
mkdir -p "$out"
for setup in "${setups[@]}"; do
  for n in $low $high; do
    env "${stream[@]}" BENCH_CALLS=$n valgrind --tool=callgrind "${toggle[@]}" \
      --callgrind-out-file="$out/$setup-$n.out" "$bin" --profile "$setup" \
      > "$out/$setup-$n.log" 2>&1 &
  done
  wait
  count() { sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out/$setup-$1.log"; }
  echo "$setup: $(( ($(count $high) - $(count $low)) / (high - low) )) instructions per call"
done
