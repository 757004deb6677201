"""The reference Python SDK on the same fake servers as the Rust benchmarks.

Run by compare_python.sh, which starts the servers (`overhead --serve-fake`) and sets
BENCH_OPENAI_URL, BENCH_TRACIA_URL, OPENAI_BASE_URL and OPENAI_API_KEY. Measures, per
call, one caller at a time: a raw HTTP POST with httpx (the floor), and
`Tracia.run_local` (litellm underneath), whose span goes to the fake Tracia API on a
background thread. CPU time is the whole process's (getrusage: every thread), up to
`flush()` of the measured calls' spans. Prints a markdown table and a PYTHON_OVERHEAD
line for the script.
"""

import os
import sys
import resource
import statistics
import time

import httpx
from tracia import Tracia

MODEL = "gpt-3.5-turbo"
PROMPT = "Tell me a joke about opentelemetry"
CALLS = int(os.environ.get("BENCH_PY_CALLS", "400"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(samples, p):
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


def measure(call, settle):
    """One round: warm up, then CALLS calls; latencies, CPU per call, calls per second."""
    for _ in range(max(20, CALLS // 5)):
        call()
    settle()
    latencies = []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    wall = time.perf_counter() - wall0
    settle()
    cpu = cpu_seconds() - cpu0
    return {
        "median": statistics.median(latencies),
        "p99": percentile(latencies, 99),
        "cpu": cpu / CALLS,
        "calls_per_s": CALLS / wall,
    }


def main():
    url = os.environ["BENCH_OPENAI_URL"].rstrip("/") + "/chat/completions"
    http = httpx.Client()
    headers = {"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}

    def floor():
        response = http.post(url, json=body, headers=headers)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    client = Tracia(os.environ["BENCH_TRACIA_KEY"], base_url=os.environ["BENCH_TRACIA_URL"])

    def run_local():
        return client.run_local(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}]
        ).text

    setups = [("raw HTTP POST (httpx), no tracing", floor, lambda: None),
              ("`Tracia.run_local` (litellm), span to Tracia REST", run_local, client.flush)]
    rounds = {name: [] for name, _, _ in setups}
    for _ in range(ROUNDS):
        for name, call, settle in setups:
            rounds[name].append(measure(call, settle))
    figures = {
        name: {k: statistics.median(r[k] for r in results) for k in results[0]}
        for name, results in rounds.items()
    }

    print(f"Python {'.'.join(map(str, sys.version_info[:3]))}, one caller, "
          f"{CALLS} calls per round, median of {ROUNDS} rounds.\n")
    print("| Setup | Median | p99 | CPU/call | CPU over floor | Calls/s |")
    print("|---|---:|---:|---:|---:|---:|")
    floor_figures = figures[setups[0][0]]
    for name, f in figures.items():
        print(f"| {name} | {f['median'] * 1e6:.0f} µs | {f['p99'] * 1e6:.0f} µs "
              f"| {f['cpu'] * 1e6:.0f} µs | {(f['cpu'] - floor_figures['cpu']) * 1e6:+.0f} µs "
              f"| {f['calls_per_s']:.0f} |")
    traced = figures[setups[1][0]]
    print()
    print(f"PYTHON_OVERHEAD cpu_us={(traced['cpu'] - floor_figures['cpu']) * 1e6:.1f} "
          f"median_us={(traced['median'] - floor_figures['median']) * 1e6:.1f} "
          f"calls_per_s={traced['calls_per_s']:.0f} "
          f"floor_cpu_us={floor_figures['cpu'] * 1e6:.1f} "
          f"floor_median_us={floor_figures['median'] * 1e6:.1f}")
    client.close()


if __name__ == "__main__":
    main()
