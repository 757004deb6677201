#!/usr/bin/env bash
# What tracing costs a call in the reference Python SDK (tracia + litellm) and in this
# crate, against the same fake servers in the same run: starts `overhead --serve-fake`
# (fake OpenAI answering `openai/chat-1`, fake Tracia API, OTLP receiver), runs
# benches/compare_python.py, then the Rust sequential report on the same servers, and
# prints the Rust/Python ratio of the per-call overhead over each language's raw POST.
#
#   benches/compare_python.sh        (BENCH_PY_CALLS, BENCH_CALLS, BENCH_ROUNDS tune it;
#                                     BENCH_RUST_REPORT=calls|streams|all for more Rust tables)
#
# The virtualenv lives in target/bench-venv (BENCH_VENV to move it); nothing is
# installed outside it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${BENCH_VENV:-target/bench-venv}
if ! "$venv/bin/python" -c "import tracia, litellm" 2>/dev/null; then
  echo "creating $venv with tracia and litellm" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check tracia litellm
fi

bin=$(cargo bench --bench overhead --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "cannot find the overhead bench binary" >&2; exit 1; }

tmp=$(mktemp -d)
mkfifo "$tmp/stdin"
"$bin" --serve-fake < "$tmp/stdin" > "$tmp/urls" &
server=$!
exec 3> "$tmp/stdin" # the servers run until this closes
cleanup() { exec 3>&-; wait "$server" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q '^READY$' "$tmp/urls" && break; sleep 0.1; done
grep -q '^READY$' "$tmp/urls" || { echo "the fake servers did not start" >&2; exit 1; }
set -a
# shellcheck disable=SC1090
. <(grep '^BENCH_.*=' "$tmp/urls")
set +a
export BENCH_TRACIA_KEY=tr_bench_0123456789abcdef # servers.rs: TRACIA_KEY
export OPENAI_BASE_URL=$BENCH_OPENAI_URL OPENAI_API_KEY=sk-bench-0123456789abcdefghijklmnop
export LITELLM_LOCAL_MODEL_COST_MAP=True # else litellm's import retries a download

echo "## Python (load average $(cut -d' ' -f1 /proc/loadavg))"
echo
"$venv/bin/python" benches/compare_python.py | tee "$tmp/python"
echo
echo "## Rust, same servers (load average $(cut -d' ' -f1 /proc/loadavg))"
echo
"$bin" --report "${BENCH_RUST_REPORT:-sequential}" | tee "$tmp/rust"
echo

field() { sed -n "s/.* $2=\([-0-9.]*\).*/\1/p" <<< "$1"; }
py=$(grep '^PYTHON_OVERHEAD' "$tmp/python")
for setup in 4_traced_tracia 3_traced_otlp; do
  rs=$(grep "^OVERHEAD setup=$setup mode=sequential" "$tmp/rust")
  awk -v rc="$(field "$rs" cpu_us)" -v rl="$(field "$rs" median_us)" \
      -v pc="$(field "$py" cpu_us)" -v pl="$(field "$py" median_us)" -v s="$setup" 'BEGIN {
    printf "Rust %s vs Python run_local, overhead over each raw POST: CPU %.1f µs vs %.0f µs (Rust/Python %.3f, Python/Rust %.0f×); median latency %+.1f µs vs %+.0f µs (Rust/Python %.3f)\n",
      s, rc, pc, rc / pc, pc / rc, rl, pl, rl / pl }'
done
