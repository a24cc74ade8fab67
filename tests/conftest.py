"""Shared fixtures. Nothing here may reach any address but loopback: IMDS is off and AWS variables are cleared."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from hybrid.core import procs
from tests.fakes import eventually

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "OS_CLOUD", "OS_AUTH_URL"):
    os.environ.pop(_name, None)
# The operator's AWS files stay out too: settings take a profile's region from them, and botocore its credentials.
os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
# The operator's settings (HYBRID_*) stay out of the tests; HYBRID_UPDATE_SCREENSHOTS is the tests' own switch.
for _name in [n for n in os.environ if n.startswith("HYBRID_") and n != "HYBRID_UPDATE_SCREENSHOTS"]:
    os.environ.pop(_name)


@pytest.fixture
def stack_name() -> str:
    """A fresh stack name, so tests sharing one emulator never see each other's resources."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def children(tmp_path):
    """Starts Python children, ``python ARGS`` in tmp_path (``-m sleeper`` runs a module there that sleeps a minute),
    each once its command line is readable (right after exec it reads empty for a moment); kills what is left at the
    end."""
    (tmp_path / "sleeper.py").write_text("import time; time.sleep(60)")
    started: list[subprocess.Popen] = []

    def start(*args: str, **popen: object) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, *args], cwd=tmp_path, **popen)
        started.append(process)
        eventually(lambda: procs.cmdline(process.pid) or not procs.is_alive(process.pid))
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout:
            process.stdout.close()
