#!/usr/bin/env bash
# Every figure of BENCHMARKS.md in one run, one after another on an otherwise idle
# machine: the reference Python SDK and every Rust call setup on the same fake servers
# (compare_python.sh with the full Rust report), the export pipeline's throughput, and
# the collector store's reads at one million spans. Writes target/bench-report.md.
#
#   benches/all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/bench-report.md
mkdir -p target
{
  echo "# Bench report, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1), $(rustc --version)"
  echo
  echo "# Calls: Python and Rust on the same servers"
  echo
  BENCH_RUST_REPORT=all benches/compare_python.sh
  echo
  echo "# Export throughput"
  echo
  cargo bench --bench export -- --report 2>/dev/null
  echo
  echo "# Collector store (criterion)"
  echo
  cargo bench -p tracia-collector --bench store 2>/dev/null | grep -E '^[a-z].*|time:|thrpt:'
} | tee "$out"
echo "written to $out" >&2
