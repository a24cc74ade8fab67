"""The classifier's ONNX model cache, filled before local workers start, so that each starts from it instead of
importing torch to export the model.

The export runs as ``hybrid models prepare`` in a child process: torch then never loads into the caller (the local
stack's command, or the instance runner, whose memory every forked worker shares).
"""
from __future__ import annotations

import subprocess

from hybrid.core import procs


def prepare_model_cache(*, check: bool, stdout: int | None = None) -> None:
    """Runs ``hybrid models prepare`` and waits for it; with ``check``, a failure raises ``CalledProcessError``.
    ``stdout``: where its output goes (``subprocess.DEVNULL``; None: this process's stdout)."""
    subprocess.run(procs.module_command("hybrid", "models", "prepare"), check=check, stdin=subprocess.DEVNULL,
                   stdout=stdout)
