"""Benchmark of a local instance's start: what a worker forked from the instance runner spends before it serves,
with and without the runner's objects frozen out of the garbage collector (``gc.freeze`` before ``fork``).

Run: ``.venv/bin/python benchmarks/bench_fork.py [--rounds N]`` (no server is contacted; nothing is left running).

This process does what the runner does at start (``hybrid.local.instances.preload_worker_code``: imports, the
ONNX model, the boto3 service descriptions), then forks ``2 x rounds`` children, alternating frozen and not frozen
so that both see the same machine. Each child does what a new worker does before its first receive: loads its
settings, builds its worker (boto3 clients, queues, buckets, the inherited model), then runs one full collection, as
the interpreter soon would on its own. It reports its CPU time (user + system) and its minor page faults (a page
copied on write counts as one). The endpoint is a closed loopback port: building clients makes no call.
Figures are medians over the rounds.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def start_like_a_worker(state_dir: str) -> dict[str, float]:
    """In the child: a new worker's work before it serves, measured."""
    from app_tier.service import build_worker
    from hybrid.local.instances import inherited_classifier
    from hybrid.core.settings import load

    cpu, faults = time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    settings = load(None, {}, {"state_dir": state_dir, "aws": {"endpoint_url": "http://127.0.0.1:9"}})
    build_worker(settings, "i-bench", inherited_classifier(settings))
    gc.collect()
    return {"cpu_ms": (time.process_time() - cpu) * 1000,
            "page_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}


def fork_once(frozen: bool, state_dir: str) -> dict[str, float]:
    if frozen:
        gc.freeze()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 1
        try:
            os.write(write_end, json.dumps(start_like_a_worker(state_dir)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        figures = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    gc.unfreeze()
    if not figures:
        raise SystemExit("a forked child failed before it reported")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="forks of each kind (default 7)")
    args = parser.parse_args()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    from hybrid.local.instances import preload_worker_code

    print("preloading as the instance runner does ...", file=sys.stderr)
    preload_worker_code()
    print(f"objects tracked by the collector in the runner: {len(gc.get_objects()):,}")
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="bench-fork-") as state_dir:
        for _ in range(args.rounds):
            for frozen in (False, True):
                results[frozen].append(fork_once(frozen, state_dir))
    print(f"\nA forked worker's start (settings, clients, worker, one full collection), median of {args.rounds}:")
    print(f"  {'runner objects':<16} {'CPU ms':>8} {'page faults':>12}")
    for frozen, label in ((False, "not frozen"), (True, "frozen")):
        cpu = statistics.median(r["cpu_ms"] for r in results[frozen])
        faults = statistics.median(r["page_faults"] for r in results[frozen])
        print(f"  {label:<16} {cpu:8.1f} {faults:12,.0f}")
    ratio = (statistics.median(r["cpu_ms"] for r in results[False])
             / statistics.median(r["cpu_ms"] for r in results[True]))
    print(f"  freezing makes a worker's start {ratio:.1f}x cheaper in CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
