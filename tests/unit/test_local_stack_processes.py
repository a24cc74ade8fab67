"""`local down` counts what is left of a state folder's processes, but never the commands that run it."""
import subprocess
import sys

from hybrid.local.stack import processes_of

ASK = ("import sys; from pathlib import Path; from hybrid.local.stack import processes_of; "
       "print(processes_of(Path(sys.argv[1])))")


def test_the_shell_that_runs_the_check_and_the_check_itself_are_not_left_over(tmp_path):
    """As `bash -c "hybrid --state-dir DIR local down"` runs it: the shell's command line names the folder too."""
    shell = f"{sys.executable} -c {ASK!r} {tmp_path}; : {tmp_path}"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_process_of_the_folder_that_is_not_an_ancestor_is_left_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)])
    try:
        assert [pid for pid, _ in processes_of(tmp_path)] == [sleeper.pid]
    finally:
        sleeper.kill()
        sleeper.wait()
