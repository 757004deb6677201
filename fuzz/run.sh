#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, each from a throwaway corpus seeded
# with seeds/<target>: fuzz/run.sh [SECONDS_PER_TARGET] (default 20). Fails if any
# target crashes; the crashing input is kept in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"

# The toolchain is stable: this lets it accept the -Z flags cargo-fuzz passes
# (address sanitizer, coverage instrumentation).
export RUSTC_BOOTSTRAP=1

cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

cargo fuzz build
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
for target in $(cargo fuzz list); do
  corpus="$work/corpus/$target"
  mkdir -p "$corpus"
  if [ -d "seeds/$target" ]; then
    cp seeds/"$target"/* "$corpus"/
  fi
  log="$work/$target.log"
  if cargo fuzz run "$target" "$corpus" -- -max_total_time="$seconds" >"$log" 2>&1; then
    runs="$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 | cut -d' ' -f2 || true)"
    echo "fuzz: $target ok, ${runs:-?} runs in ${seconds} s"
    passed=$((passed + 1))
  else
    tail -n 40 "$log" >&2
    echo "fuzz: $target FAILED" >&2
    failed=$((failed + 1))
  fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
