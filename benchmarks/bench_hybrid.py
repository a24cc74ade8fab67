"""Benchmark of the whole hybrid on this machine: the OpenStack demo (web tier as a VM on the local OpenStack,
reached through its floating IP) beside the local demo (web tier as a local process), in one run.

Run: ``sudo .venv/bin/python benchmarks/bench_hybrid.py [--runs N] [--skip-local]`` from the repository root, with
the local OpenStack up with real compute (``sudo bash devstack/minicloud.sh up``); exits 2 saying why when it
cannot run. Each run is ``hybrid demo`` and then ``hybrid demo --openstack`` through the library
(``hybrid.tools.demo.run_demo`` / ``run_openstack_demo``) with their own stacks and state folders, 100 sample
images, 100 at a time. It prints, per run and side by side: cold and warm average and p95 latency, the cold run's
throughput, seconds from the start to the first answer, the fleet's peak and its return to 0, and for the OpenStack
demo each stage's seconds and the web tier's memory in its VM (systemd's ``MemoryCurrent`` of ``hybrid-web``, read
over SSH before teardown). The web-tier image comes from the machine's image cache when this checkout was baked
before (the ``bake`` stage says how long it took). Results go to stdout, progress lines to stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402

OPENSTACK_SETTINGS = ["web.bind=127.0.0.1:8000", "scaling.poll_interval=1.0"]  # as `hybrid demo --openstack`


def web_tier_memory(demo) -> str:
    """The web tier's memory in its VM (MB), from systemd over SSH."""
    from hybrid.core.naming import IMAGE_LOGIN_USER
    from hybrid.openstack.remote import open_ssh, run

    client = open_ssh(demo.stack.ssh_target(IMAGE_LOGIN_USER), demo.stack.key_path())
    try:
        output, code = run(client, "sudo systemctl show hybrid-web.service -p MemoryCurrent --value")
    finally:
        client.close()
    return f"{int(output) / 2**20:.0f}" if code == 0 and output.isdigit() else "n/a"


def summary_row(kind: str, result, memory: str = "") -> list[str]:
    cold, warm = result.summaries.get("cold", {}), result.summaries.get("warm", {})

    def latency(run: dict, key: str) -> str:
        return f"{run['latency_s'][key]:.2f}" if run else "-"

    zero = f"{result.time_to_zero:.1f}" if result.time_to_zero is not None else "never"
    first = f"{result.first_answer_s:.1f}" if result.first_answer_s is not None else "-"
    right = f"{cold.get('correct', 0)}+{warm.get('correct', 0)}/200"
    return [kind, right, latency(cold, "avg"), latency(cold, "p95"), f"{cold.get('throughput_rps', 0):.1f}",
            latency(warm, "avg"), latency(warm, "p95"), first, str(result.max_fleet), zero, memory or "-",
            "yes" if result.passed else "NO"]


def run_local(work: Path, index: int) -> list[str]:
    from hybrid.tools.demo import demo_settings, run_demo

    settings, args = demo_settings(work / f"local-{index}", f"bench-l{uuid.uuid4().hex[:6]}", [])
    result = run_demo(settings, args, work / f"local-{index}-report", report=common.progress)
    return summary_row("web tier: local process", result)


def run_openstack(work: Path, index: int) -> tuple[list[str], dict[str, float]]:
    from hybrid.tools.demo import demo_settings, run_openstack_demo

    settings, _ = demo_settings(work / f"os-{index}", f"bench-o{uuid.uuid4().hex[:6]}", OPENSTACK_SETTINGS)
    memory: dict[str, str] = {}
    result = run_openstack_demo(settings, work / f"os-{index}-report", report=common.progress,
                                before_down=lambda demo: memory.update(mb=web_tier_memory(demo)))
    return summary_row("web tier: VM, floating IP", result, memory.get("mb", "")), result.stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="pairs of demos (default 1)")
    parser.add_argument("--skip-local", action="store_true", help="only the OpenStack demo")
    args = parser.parse_args(argv)
    from hybrid.core.settings import load
    from hybrid.local import minicloud, web_vm

    reason = minicloud.unavailable_reason() or web_vm.unavailable_reason(load(None, {}, {}))
    if reason:
        print(f"cannot run the OpenStack demo here: {reason}")
        return 2
    print(f"# the whole hybrid, {common.cpu_model()}, {os.cpu_count()} cores; 100 requests, 100 at a time")
    rows, stages = [], []
    with tempfile.TemporaryDirectory(prefix="bench-hybrid-") as folder:
        work = Path(folder)
        for index in range(args.runs):
            if not args.skip_local:
                rows.append(run_local(work, index))
            row, stage = run_openstack(work, index)
            rows.append(row)
            stages.append([str(index + 1), *(f"{stage.get(name, 0):.1f}" for name in web_vm.STAGES)])
    print(common.table(["demo", "right", "cold avg s", "cold p95 s", "cold req/s", "warm avg s", "warm p95 s",
                        "start to 1st answer s", "peak fleet", "to 0 s", "web MB", "passed"], rows))
    print(common.table(["run", *(f"{name} s" for name in web_vm.STAGES)], stages))
    return 0 if all(row[-1] == "yes" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
