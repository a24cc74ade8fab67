"""Benchmark of the OpenStack side: the local fixture's own commands, and ``hybrid openstack`` up / status / down
on it.

Run: ``.venv/bin/python benchmarks/bench_openstack.py [--quick] [--restart]`` from the repository root, as root
(``minicloud.sh up`` / ``down`` need it; without root those rows are skipped). The fixture must already be up
(``sudo bash devstack/minicloud.sh up``): if ``minicloud.sh status`` fails or the cloud ``hybrid-local`` does not
answer, the script says so and exits 2; it never starts the fixture itself, and never installs or purges anything.
Only 127.0.0.1 is contacted (the fixture's APIs): with ``openstack.routable = false`` nothing is ever sent to a
floating IP. Results go to stdout, progress lines to stderr.

Part 1, the fixture (devstack/minicloud.sh). ``status`` (every API checked, listeners, processes) and ``up`` on a
running cloud (idempotent: it only checks that each API answers), each run ``FIXTURE_REPEATS`` times (5; 3 with
``--quick``) as a subprocess, median / min / each run in seconds, and the number of lines ``up`` printed (when it
found everything running: 4 with real compute, 2 with fake; more means it (re)configured or restarted something, and
its time says so too).
With ``--restart`` (off by default: about 50 s, and it interrupts anyone else using the fixture) it also times
``down`` (stops every daemon) and ``up`` after ``down`` (restarts them and waits until each API answers), after
part 2, then checks ``status`` again. Not measured: the first bring-up on a clean machine (apt install + configure
+ bootstrap, about 2.5-4 min), which would need the packages purged first.

Part 2, ``hybrid openstack`` on the fixture through the library, as the CLI does it: per repetition a fresh stack
name and a fresh state folder (``hybrid.core.settings.load(None, {}, {"stack": name, "state_dir": tmp})``, so cloud
``hybrid-local``), and a 16 MiB qcow2 image made by ``qemu-img create -f qcow2``. Each step builds its stack anew
(``build_openstack_stack(settings, image)``: a new openstacksdk connection and token, as each CLI command does)
and is timed including that: the first ``up`` (uploads the image, creates key pair, security group, server, floating
IP; waits until the fake server is ACTIVE), a second ``up`` (must change nothing), ``status`` (must show every
resource ok) and ``down(delete_image=True)``. ``STACK_REPEATS`` repetitions (3; 1 with ``--quick``), median / min
/ each run. The breakdown of the first run's first ``up`` times the arrival of each ``report`` line (one per
change, after that change is done), and when ``plan`` (cloud checks + observing every resource) returned; the
first run's ``down`` is broken down the same way (one line per resource). The first repetition also pays the
client's one-time costs (openstacksdk's service discovery, Python imports in the drivers).
Whatever happens, each stack is torn down in a ``finally`` (``down(delete_image=True)`` again if its timed
``down`` did not complete); afterwards a plain openstacksdk connection lists servers, key pairs, security groups,
floating IPs and images of the project and checks that none carries a benchmark stack's name or marker
(``hybrid:stack=<name>`` in metadata / description / key comment, ``hybrid_stack=<name>`` image tag); exit 1 if
any does.

Part 3, real compute (skipped, with the reason, when the fixture runs fake compute or the run is not root):
- the fixture's bring-ups as ``minicloud.sh up`` recorded them (/var/lib/minicloud/bring-ups: seconds and what each
  had to do: packages, base-image, databases); the first one that installed the packages is the first bring-up on a
  clean machine;
- the base image (devstack/base_image.sh): a cold build into a fresh cache folder (mmdebstrap from this machine's
  Debian mirror, about 90 s; skipped with ``--quick``) and a cached ``build`` of the fixture's own cache;
- a server booted from ``debian-12-base`` through the project's code (``build_openstack_stack``: key pair, security
  group with SSH from the external range, m1.tiny, floating IP), ``VM_REPEATS`` times (2; 1 with ``--quick``): ``up``
  (returns once the server is ACTIVE and its floating IP associated), SSH-ready (first successful paramiko login
  through the floating IP, from the fixture's namespace via ``minicloud.sh exec``, tried every 2 s; SSH is pinned to
  the host keys the console prints near the end of cloud-init's final stage, so it waits for them), cloud-init's
  "finished" line in the console log, and ``down``. Per hypervisor: the one the fixture chose; the other is shown
  with the reason it is not used (``minicloud.sh status``).

Times are wall-clock seconds on a fixture that runs on this same machine, so they move with its load: the header
shows the load average at the start and the end. Part 2's servers boot an empty 16 MiB disk (under fake compute
they boot nothing), so its times are the API's; part 3 has the real boot.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, for ``import common`` (see common.py)

import common

ROOT = Path(__file__).resolve().parent.parent
MINICLOUD = ROOT / "devstack" / "minicloud.sh"
CLOUD = "hybrid-local"
IMAGE_SIZE = "16M"
EXIT_NO_FIXTURE = 2


@dataclass(frozen=True)
class Plan:
    fixture_repeats: int
    stack_repeats: int


FULL = Plan(fixture_repeats=5, stack_repeats=3)
QUICK = Plan(fixture_repeats=3, stack_repeats=1)


# ---------------------------------------------------------------- part 1: the fixture

@dataclass(frozen=True)
class Command:
    seconds: float
    returncode: int
    output: str

    @property
    def lines(self) -> int:
        return len(self.output.splitlines())


def minicloud(action: str, timeout: float = 600.0) -> Command:
    """``bash devstack/minicloud.sh <action>`` as a subprocess, timed; its output is kept, not shown."""
    start = time.perf_counter()
    done = subprocess.run(["bash", str(MINICLOUD), action], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, timeout=timeout, check=False)
    return Command(time.perf_counter() - start, done.returncode, done.stdout)


def repeat_minicloud(action: str, times: int) -> list[Command]:
    runs = []
    for _ in range(times):
        run = minicloud(action)
        if run.returncode != 0:
            raise RuntimeError(f"minicloud.sh {action} exited {run.returncode}:\n{tail(run.output)}")
        runs.append(run)
    return runs


def tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def fixture_problem() -> str:
    """Why the fixture cannot be benchmarked now (empty when it can): ``status`` must pass and the member cloud
    must give a token."""
    if not MINICLOUD.is_file():
        return f"{MINICLOUD} not found"
    status = minicloud("status", timeout=120)
    if status.returncode != 0:
        return f"`minicloud.sh status` exited {status.returncode}:\n{tail(status.output)}"
    try:
        raw_connection().identity.get_token()
    except Exception as exc:  # noqa: BLE001 - any failure means the cloud does not answer as it should
        return f"cloud {CLOUD!r} does not answer ({type(exc).__name__}: {str(exc)[:200]})"
    return ""


# ---------------------------------------------------------------- part 2: hybrid openstack up / status / down

def raw_connection() -> Any:
    """A plain openstacksdk connection to the fixture's member cloud, beside the project's code."""
    import openstack

    return openstack.connect(cloud=CLOUD, api_timeout=15)


def make_image(folder: Path) -> Path:
    """A tiny empty qcow2 (``qemu-img create -f qcow2 web.qcow2 16M``)."""
    path = folder / "web.qcow2"
    if shutil.which("qemu-img") is None:
        raise RuntimeError("qemu-img not found (package qemu-utils, which minicloud.sh installs)")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), IMAGE_SIZE], check=True)
    return path


@dataclass
class Lines:
    """A ``report`` callback that stamps each line with the seconds since ``start``."""

    start: float = field(default_factory=time.perf_counter)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.marks.append((time.perf_counter() - self.start, line))


@dataclass
class StackRun:
    name: str
    first_up: float = 0.0
    second_up: float = 0.0
    status: float = 0.0
    down: float = 0.0
    first_changes: int = -1
    second_changes: int = -1
    status_states: dict[str, str] = field(default_factory=dict)
    first_up_marks: list[tuple[float, str]] = field(default_factory=list)
    down_marks: list[tuple[float, str]] = field(default_factory=list)


def stack_name(index: int) -> str:
    return f"bench-os-{index}-{secrets.token_hex(3)}"


def time_stack(name: str, image_path: Path, state_dir: Path) -> StackRun:
    """One repetition: first up, second up, status, down; torn down in ``finally`` if ``down`` did not complete."""
    from hybrid.openstack.image import prepare_image
    from hybrid.openstack.stack import build_openstack_stack
    from hybrid.core.settings import load

    settings = load(None, {}, {"stack": name, "state_dir": str(state_dir)})
    source = prepare_image(image_path, False, state_dir / "images")
    run, down_done = StackRun(name), False
    try:
        common.progress(f"[{name}] first up")
        lines = Lines()
        stack = build_openstack_stack(settings, source)
        plan = stack.plan

        def timed_plan() -> Any:  # marks when the checks and observations before the first change ended
            changes = plan()
            lines("plan: cloud checks + observe every resource")
            return changes

        stack.plan = timed_plan  # type: ignore[method-assign]
        changes = stack.up(report=lines)
        run.first_up, run.first_changes, run.first_up_marks = time.perf_counter() - lines.start, len(changes), \
            lines.marks

        common.progress(f"[{name}] second up")
        start = time.perf_counter()
        run.second_changes = len(build_openstack_stack(settings, source).up(report=common.ignore))
        run.second_up = time.perf_counter() - start

        common.progress(f"[{name}] status")
        start = time.perf_counter()
        rows = build_openstack_stack(settings).status()
        run.status = time.perf_counter() - start
        run.status_states = {row["kind"]: row["state"] for row in rows}

        common.progress(f"[{name}] down")
        lines = Lines()
        build_openstack_stack(settings).down(report=lines, delete_image=True)
        run.down, run.down_marks, down_done = time.perf_counter() - lines.start, lines.marks, True
    finally:
        if not down_done:
            common.progress(f"[{name}] tearing down after a failure")
            try:
                build_openstack_stack(settings).down(report=common.ignore, delete_image=True)
            except Exception as exc:  # noqa: BLE001 - the original error is the one to raise; leftovers are listed
                common.progress(f"[{name}] teardown failed: {type(exc).__name__}: {exc}")
    return run


def leftovers(conn: Any, names: Sequence[str]) -> list[str]:
    """Every resource of the project that carries one of the stacks' names or markers."""
    from hybrid.openstack.names import OpenStackNames, carries_marker

    found = []
    for name in names:
        names_of = OpenStackNames(name)
        own = {names_of.server, names_of.key_pair, names_of.security_group, names_of.image}
        found += [f"server {s.name} ({s.id})" for s in conn.compute.servers()
                  if s.name in own or (s.metadata or {}).get("hybrid:stack") == name]
        found += [f"keypair {k.name}" for k in conn.compute.keypairs()
                  if k.name in own or carries_marker(k.public_key, name)]
        found += [f"security_group {g.name} ({g.id})" for g in conn.network.security_groups()
                  if g.name in own or carries_marker(g.description, name)]
        found += [f"floating_ip {i.floating_ip_address} ({i.id})" for i in conn.network.ips()
                  if carries_marker(i.description, name)]
        found += [f"image {i.name} ({i.id})" for i in conn.image.images()
                  if i.name in own or names_of.image_tag in (i.tags or [])]
    return found


# ---------------------------------------------------------------- report

def seconds_row(label: str, values: Sequence[float], digits: int = 3) -> list[str]:
    return [label, f"{statistics.median(values):.{digits}f}", f"{min(values):.{digits}f}",
            ", ".join(f"{v:.{digits}f}" for v in values)]


def fixture_table(status: list[Command], up: list[Command] | None, restart: tuple[Command, Command] | None,
                  restart_asked: bool) -> str:
    rows = [seconds_row(f"minicloud.sh status (x{len(status)})", [r.seconds for r in status])]
    if up is not None:
        rows.append(seconds_row(f"minicloud.sh up, cloud running (x{len(up)})", [r.seconds for r in up]))
    if restart is not None:
        down, again = restart
        rows.append(seconds_row("minicloud.sh down", [down.seconds], 1))
        rows.append(seconds_row("minicloud.sh up after down", [again.seconds], 1))
    text = common.table(["fixture", "median s", "min s", "each run, s"], rows)
    if up is not None:
        text += f"\nlines printed by `up` on the running cloud, per run: {', '.join(str(r.lines) for r in up)} " \
                "(4 with real compute, 2 with fake = only checked that everything answers)"
    else:
        text += "\n`minicloud.sh up` / `down` not timed: not root (run with sudo)"
    if restart is None and not restart_asked:
        text += "\n`down` and `up` after `down` not timed (pass --restart: about 50 s, interrupts other users)"
    elif restart is None:
        text += "\n`down` and `up` after `down` not timed despite --restart: " + \
                ("not root" if up is None else "a stack run failed")
    return text


def stack_table(runs: list[StackRun]) -> str:
    rows = [seconds_row("up (first: image, keypair, group, server, floating IP)", [r.first_up for r in runs]),
            seconds_row("up (second, no changes)", [r.second_up for r in runs]),
            seconds_row("status", [r.status for r in runs]),
            seconds_row("down (delete_image)", [r.down for r in runs])]
    text = common.table([f"hybrid openstack on {CLOUD}", "median s", "min s", "each run, s"], rows)
    changes = ", ".join(f"{r.first_changes}/{r.second_changes}" for r in runs)
    states = sorted({state for r in runs for state in r.status_states.values()})
    return text + f"\nchanges made by first/second up, per run: {changes}; states shown by status: " \
                  f"{', '.join(states)}"


def breakdown(title: str, marks: list[tuple[float, str]]) -> str:
    rows, previous = [], 0.0
    for at, line in marks:
        rows.append([line, f"{at - previous:.3f}", f"{at:.3f}"])
        previous = at
    return common.table([title, "step s", "at s"], rows)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def header(args: argparse.Namespace) -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    flags = " ".join(flag for flag, on in (("--quick", args.quick), ("--restart", args.restart)) if on)
    return (f"hybrid OpenStack benchmark -- {now}{' (' + flags + ')' if flags else ''}\n"
            f"{common.cpu_model()}, {os.cpu_count()} CPUs, load average {load_average()} (1/5/15 min); "
            f"python {sys.version.split()[0]}, openstacksdk {common.package_version('openstacksdk')}; "
            f"cloud {CLOUD} (devstack/minicloud.sh)")


# ---------------------------------------------------------------- part 3: real compute

BASE_IMAGE = "debian-12-base"
BRING_UPS = Path("/var/lib/minicloud/bring-ups")
BASE_IMAGE_SCRIPT = ROOT / "devstack" / "base_image.sh"
VM_REPEATS_FULL, VM_REPEATS_QUICK = 2, 1
SSH_READY_TIMEOUT = 300.0
CLOUD_INIT_TIMEOUT = 300.0


@dataclass
class VmRun:
    name: str
    up: float = 0.0
    ssh_ready: float = 0.0
    cloud_init: float = 0.0
    down: float = 0.0


def hypervisor_line(status_output: str) -> str:
    """``compute: libvirt, virt_type qemu: <why>`` from ``minicloud.sh status``."""
    return next((line for line in status_output.splitlines() if line.startswith("compute:")), "compute: unknown")


def bring_ups() -> list[str]:
    return BRING_UPS.read_text().splitlines() if BRING_UPS.exists() else []


def time_base_image(cold: bool) -> list[list[str]]:
    rows = []
    if cold:
        with tempfile.TemporaryDirectory(prefix="bench-base-image-") as cache:
            for label in ("cold (fresh cache, mmdebstrap)", "cached (same cache)"):
                start = time.perf_counter()
                subprocess.run(["bash", str(BASE_IMAGE_SCRIPT), "build", "--cache", cache], check=True,
                               capture_output=True, text=True)
                rows.append([f"base image build, {label}", f"{time.perf_counter() - start:.2f}"])
    start = time.perf_counter()
    done = subprocess.run(["bash", str(BASE_IMAGE_SCRIPT), "build"], check=True, capture_output=True, text=True)
    rows.append([f"base image build, cached (the fixture's: {Path(done.stdout.strip()).name})",
                 f"{time.perf_counter() - start:.2f}"])
    return rows


def time_vm(name: str, state_dir: Path, external_range: str) -> VmRun:
    """One server from the base image: up, SSH-ready, cloud-init finished, down (again in ``finally``)."""
    from hybrid.core.settings import load
    from hybrid.local import minicloud
    from hybrid.openstack.stack import build_openstack_stack

    settings = load(None, {}, {"stack": name, "state_dir": str(state_dir), "openstack.image_name": BASE_IMAGE,
                               "openstack.flavor": "m1.tiny", "aws.operator_cidr": external_range})
    run, done = VmRun(name), False
    try:
        start = time.perf_counter()
        build_openstack_stack(settings).up(report=common.ignore)
        run.up = time.perf_counter() - start
        stack = build_openstack_stack(settings)
        address, key = stack.find("floating_ip").properties["address"], stack.key_path()
        host_keys = stack.ssh_target("debian").host_keys  # SSH is pinned to the keys the console prints
        minicloud.wait_for_ssh(address, key, host_keys, SSH_READY_TIMEOUT - (time.perf_counter() - start))
        run.ssh_ready = time.perf_counter() - start
        server_id, conn = stack.find("server").id, raw_connection()
        while not minicloud.CLOUD_INIT_FINISHED.search(conn.compute.get_server_console_output(server_id)["output"]):
            if time.perf_counter() - start > CLOUD_INIT_TIMEOUT:
                raise RuntimeError(f"cloud-init did not finish within {CLOUD_INIT_TIMEOUT:.0f} s")
            time.sleep(2)
        run.cloud_init = time.perf_counter() - start
        start = time.perf_counter()
        build_openstack_stack(settings).down(report=common.ignore)
        run.down, done = time.perf_counter() - start, True
    finally:
        if not done:
            build_openstack_stack(settings).down(report=common.ignore)
    return run


def compute_part(quick: bool, status_output: str) -> tuple[str, list[str]]:
    """Part 3's text and the stack names it used (for the leftover check)."""
    from hybrid.local import minicloud

    compute = hypervisor_line(status_output)
    lines = [compute]
    records = bring_ups()
    first = next((r for r in records if "packages" in r), "")
    lines.append("first bring-up on a clean machine (the `up` that installed the packages): "
                 + (first or f"none recorded in {BRING_UPS}"))
    if records:
        lines.append(f"last bring-up: {records[-1]}")
    if reason := minicloud.unavailable_reason():
        return "\n".join(lines + [f"real compute not measured: {reason}"]), []
    if raw_connection().image.find_image(BASE_IMAGE, ignore_missing=True) is None:
        return "\n".join(lines + [f"real compute not measured: no image {BASE_IMAGE!r} in Glance"]), []
    common.progress("base image builds" + ("" if quick else " (cold: about 90 s)"))
    image_rows = time_base_image(cold=not quick)
    import openstack

    admin = openstack.connect(cloud=f"{CLOUD}-admin", api_timeout=15)  # the external subnet is the admin's
    external = admin.network.find_subnet("public-subnet", ignore_missing=False).cidr
    runs, names = [], []
    with tempfile.TemporaryDirectory(prefix="bench-vm-") as tmp:
        for index in range(VM_REPEATS_QUICK if quick else VM_REPEATS_FULL):
            names.append(f"bench-vm-{index}-{secrets.token_hex(3)}")
            common.progress(f"server {index + 1}: boot from {BASE_IMAGE}, SSH, cloud-init, down")
            runs.append(time_vm(names[-1], Path(tmp) / f"state-{index}", external))
    virt = re.search(r"virt_type (\w+)", compute)
    chosen = virt.group(1) if virt else "?"
    rows = [seconds_row(f"[{chosen}] up (ACTIVE, floating IP)", [r.up for r in runs], 1),
            seconds_row(f"[{chosen}] SSH-ready (from create)", [r.ssh_ready for r in runs], 1),
            seconds_row(f"[{chosen}] cloud-init finished (from create)", [r.cloud_init for r in runs], 1),
            seconds_row(f"[{chosen}] down", [r.down for r in runs], 1)]
    other = "kvm" if chosen == "qemu" else "qemu"
    text = common.table(["base image", "s"], image_rows) + "\n\n" + \
        common.table([f"server from {BASE_IMAGE} (m1.tiny)", "median s", "min s", "each run, s"], rows) + \
        f"\n[{other}] not measured: the fixture runs one hypervisor ({compute})"
    return "\n".join(lines) + "\n\n" + text, names


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="3 fixture repetitions instead of 5, one stack run instead of 3")
    parser.add_argument("--restart", action="store_true",
                        help="also time minicloud.sh down and up after down (about 50 s; interrupts other users)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    print(header(args), flush=True)

    common.progress("checking the fixture")
    problem = fixture_problem()
    if problem:
        print(f"\nthe local OpenStack fixture is not up: {problem}\n"
              "start it first: sudo bash devstack/minicloud.sh up (this benchmark never starts it)", flush=True)
        return EXIT_NO_FIXTURE

    root = os.geteuid() == 0
    common.progress(f"minicloud.sh status x{plan.fixture_repeats}")
    status_runs = repeat_minicloud("status", plan.fixture_repeats)
    up_runs = None
    if root:
        common.progress(f"minicloud.sh up (running cloud) x{plan.fixture_repeats}")
        up_runs = repeat_minicloud("up", plan.fixture_repeats)

    runs: list[StackRun] = []
    names: list[str] = []
    failure: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="bench-openstack-") as tmp:
        image_path = make_image(Path(tmp))
        try:
            for index in range(plan.stack_repeats):
                names.append(stack_name(index))
                runs.append(time_stack(names[-1], image_path, Path(tmp) / f"state-{index}"))
        except Exception as exc:  # noqa: BLE001 - reported below, after the leftover check
            failure = exc
    compute_text = ""
    if failure is None:
        try:
            compute_text, vm_names = compute_part(args.quick, minicloud("status", timeout=120).output)
            names += vm_names
        except Exception as exc:  # noqa: BLE001 - reported below, after the leftover check
            failure = exc
    common.progress("checking for leftovers")
    left = leftovers(raw_connection(), names)

    restart = None
    if args.restart and root and failure is None:
        common.progress("minicloud.sh down")
        down = minicloud("down")
        common.progress("minicloud.sh up (after down)")
        again = minicloud("up")
        restart = (down, again)
        for label, run in (("down", down), ("up after down", again)):
            if run.returncode != 0:
                print(f"\nminicloud.sh {label} exited {run.returncode}:\n{tail(run.output)}", flush=True)
                return 1
        after = minicloud("status", timeout=120)
        if after.returncode != 0:
            print(f"\nminicloud.sh status after the restart exited {after.returncode}:\n{tail(after.output)}")
            return 1

    print()
    print(fixture_table(status_runs, up_runs, restart, args.restart))
    if runs:
        print()
        print(stack_table(runs))
        print()
        print(breakdown(f"first up of {runs[0].name}, step", runs[0].first_up_marks))
        print()
        print(breakdown(f"down of {runs[0].name}, step", runs[0].down_marks))
    if compute_text:
        print()
        print(compute_text)
    print(f"\nleftovers of {len(names)} stack(s) (servers, keypairs, security groups, floating IPs, images): "
          + ("none" if not left else "; ".join(left)))
    print(f"load average at the end {load_average()} (1/5/15 min)")
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if failure is not None:
        print(f"\nFAILED during stack run {len(names)}: {type(failure).__name__}: {failure}", flush=True)
        return 1
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
