"""hybrid.core.procs against real child processes (the ``children`` fixture of tests/conftest.py): a live one, a
zombie, a pid that is gone, command lines that only look like ours, and starting and stopping children."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hybrid.core import procs
from hybrid.core.errors import HybridError
from tests.fakes import eventually

SLEEPER = "import time; time.sleep(60)"
BURN_THEN_SLEEP = ("import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3:\n    pass\n"
                   "print('burnt', flush=True)\ntime.sleep(60)")
SAY_SIGTERM = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *_: (print('terminated', flush=True), "
               "sys.exit(0)))\nprint('ready', flush=True)\ntime.sleep(60)")
IGNORE_SIGTERM = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                  "time.sleep(60)")
PARENT_OF_A_SLEEPER = (f"import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
                       "print(child.pid, flush=True)\nchild.wait()")


def test_a_live_child_is_alive_and_runs_its_module_its_command_and_its_options(children, tmp_path):
    state = str(tmp_path / "state")
    child = children("-m", "sleeper", "--state-dir", state)
    assert procs.cmdline(child.pid) == child.args
    assert procs.is_alive(child.pid) and procs.read_stat(child.pid).state != "Z"
    assert procs.runs_module(child.pid, "sleeper")
    assert procs.runs_command(child.pid, child.args)
    assert procs.runs_with(child.pid, "--state-dir", state)
    assert child.pid in procs.pids() and os.getpid() in procs.pids()


def test_only_the_exact_module_command_and_option_value_count(children, tmp_path):
    state = str(tmp_path / "state")
    child = children("-m", "sleeper", "--state-dir", state)
    assert not procs.runs_module(child.pid, "sleepe")
    assert not procs.runs_module(child.pid, "hybrid.local.instances")
    assert not procs.runs_command(child.pid, child.args[:-1])
    assert not procs.runs_command(child.pid, [*child.args, "more"])
    assert not procs.runs_with(child.pid, "--state-dir", state + "-other")
    assert not procs.runs_with(child.pid, "--state-dir", state[:-1])


def test_a_command_line_that_only_mentions_the_module_or_the_value_is_not_ours(children, tmp_path):
    state = str(tmp_path / "state")
    child = children("-c", SLEEPER, "sleeper", state, "--state-dir")  # a reused pid running something else
    assert procs.is_alive(child.pid)
    assert not procs.runs_module(child.pid, "sleeper")
    assert not procs.runs_with(child.pid, "--state-dir", state)


def test_a_zombie_is_not_alive_and_runs_nothing_until_it_is_reaped(children):
    child = children("-c", "pass")
    eventually(lambda: procs.read_stat(child.pid) is not None and procs.read_stat(child.pid).state == "Z")
    assert not procs.is_alive(child.pid)
    assert not procs.runs_command(child.pid, child.args)
    assert not procs.runs_module(child.pid, "sleeper")
    procs.reap(child.pid)
    assert procs.read_stat(child.pid) is None
    procs.reap(child.pid)  # reaping twice, or a process that is not our child, is harmless
    procs.reap(1)


def test_a_pid_that_is_gone_reads_as_nothing(children):
    child = children("-m", "sleeper")
    child.kill()
    child.wait()
    assert procs.read_stat(child.pid) is None and procs.cmdline(child.pid) is None
    assert not procs.is_alive(child.pid) and not procs.runs_module(child.pid, "sleeper")
    assert procs.cpu_seconds(child.pid) == 0.0 and procs.rss_mb(child.pid) is None
    assert procs.memory_mb(child.pid) == {}
    assert child.pid not in procs.pids()


def test_cpu_seconds_rss_and_machine_busy_time_count_what_a_child_used(children):
    busy_before = procs.machine_busy_seconds()
    child = children("-c", BURN_THEN_SLEEP, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "burnt\n"
    assert 0.29 <= procs.cpu_seconds(child.pid) < 5
    assert procs.machine_busy_seconds() - busy_before >= 0.29
    assert 1 < procs.rss_mb(child.pid) < procs.rss_mb(os.getpid())
    assert procs.read_stat(child.pid).session == os.getsid(0)


def test_memory_of_this_process_is_its_resident_size_and_a_peak_at_least_as_high():
    memory = procs.memory_mb("self")
    assert 1 < memory["VmRSS"] <= memory["VmHWM"]


def test_spawn_logged_appends_both_streams_to_the_log_in_a_new_session_with_the_child_environment(tmp_path):
    log = tmp_path / "child.log"
    log.write_text("an earlier run\n")
    script = ("import os, sys\nprint(os.environ['AWS_EC2_METADATA_DISABLED'], os.environ['PYTHONUNBUFFERED'], "
              "os.environ['EXTRA'], os.getsid(0) == os.getpid(), repr(sys.stdin.read()))\nprint('to stderr', "
              "file=sys.stderr)")
    child = procs.spawn_logged([sys.executable, "-c", script], log, {"EXTRA": "x"})
    assert child.wait(timeout=30) == 0
    assert log.read_text() == "an earlier run\ntrue 1 x True ''\nto stderr\n"


def test_module_command_runs_the_module_with_this_interpreter(children):
    command = procs.module_command("sleeper", "--port-file", "p")
    assert command == [sys.executable, "-m", "sleeper", "--port-file", "p"]
    child = children(*command[1:])
    assert procs.runs_module(child.pid, "sleeper") and procs.runs_command(child.pid, command)


def test_log_tail_is_the_last_lines_or_says_there_is_no_log(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {n}\n" for n in range(20)))
    assert procs.log_tail(log) == "\n".join(f"line {n}" for n in range(5, 20))
    assert procs.log_tail(log, 2) == "line 18\nline 19"
    assert procs.log_tail(tmp_path / "missing.log") == "(no log)"


# terminate may reap the child itself, after which Popen reads an exit code of 0: the children say what they got

def test_terminate_stops_a_process_with_sigterm_when_that_is_enough(children):
    child = children("-c", SAY_SIGTERM, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    started = time.monotonic()
    procs.terminate(child.pid, lambda: procs.runs_command(child.pid, child.args), what="the child", patience=10)
    assert child.stdout.readline() == "terminated\n" and not procs.is_alive(child.pid)
    assert time.monotonic() - started < 5, "SIGTERM was enough: no wait for the patience to run out"


def test_terminate_kills_a_process_that_ignores_sigterm_after_its_patience(children):
    child = children("-c", IGNORE_SIGTERM, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    started = time.monotonic()
    procs.terminate(child.pid, lambda: procs.is_alive(child.pid), what="the stubborn one", patience=0.3)
    assert not procs.is_alive(child.pid) and time.monotonic() - started >= 0.3


def test_terminate_of_a_group_stops_the_children_of_the_leader_too(children):
    leader = children("-c", PARENT_OF_A_SLEEPER, stdout=subprocess.PIPE, text=True, start_new_session=True)
    grandchild = int(leader.stdout.readline())
    assert procs.is_alive(grandchild)
    procs.terminate(leader.pid, lambda: procs.is_alive(leader.pid) or procs.is_alive(grandchild), what="the group",
                    patience=10, group=True)
    assert not procs.is_alive(grandchild) and not procs.is_alive(leader.pid)


def test_terminate_raises_when_the_process_still_runs_after_sigkill(children):
    child = children("-c", IGNORE_SIGTERM, stdout=subprocess.PIPE, text=True)  # its pid stays until SIGKILL
    assert child.stdout.readline() == "ready\n"
    with pytest.raises(HybridError, match="the immortal one did not stop"):
        procs.terminate(child.pid, lambda: True, what="the immortal one", patience=0.1, kill_patience=0.1)
    assert not procs.is_alive(child.pid), "it had SIGTERM and SIGKILL"


def test_terminate_of_a_process_already_gone_is_fine(children):
    child = children("-m", "sleeper")
    child.kill()
    child.wait()
    procs.terminate(child.pid, lambda: True, what="the gone one", patience=0.1, kill_patience=0.1)


def test_ancestors_are_this_process_and_the_ones_that_started_it():
    found = procs.ancestors(os.getpid())
    assert {os.getpid(), os.getppid()} <= found
    assert procs.ancestors(99_999_999) == {99_999_999}, "no such process: nothing above it"


def test_a_port_is_free_until_something_listens_on_it():
    import socket

    port = procs.free_port()
    assert procs.port_is_free(port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not procs.port_is_free(port)
