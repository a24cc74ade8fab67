"""Fixes to moto's HTTP front end (its server mode), applied by the emulator launcher before the server starts.

Measured with py-spy on moto 5.2.5 under a steady load of small SQS and S3 calls (``benchmarks/bench_aws.py``):

1. Every request looks up its backend twice, and the second lookup calls ``backends.list_of_moto_modules()``, which
   lists moto's package folder and stats each of its ~270 entries: a quarter of the server's CPU per call.
   Fix: remember the backend found for each host name. The answer depends on the host name alone (the folder
   listing and the URL patterns never change while the server runs).
2. Werkzeug's request handler writes one INFO log line per request (a formatted line and a lock) that nobody
   reads: about 3 % of the server's CPU. Fix: its logger logs warnings and errors only.

``apply()`` refuses any moto version but the pinned one, like ``sqs_fixes``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from hybrid.emulator.sqs_fixes import PINNED_MOTO

_applied = False


def apply() -> None:
    """Patches moto's server dispatcher in this process. Idempotent."""
    global _applied
    import moto
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if moto.__version__ != PINNED_MOTO:
        raise RuntimeError(f"server fixes were written for moto {PINNED_MOTO}, found {moto.__version__}; "
                           "install the version pinned in pyproject.toml")
    if _applied:
        return
    DomainDispatcherApplication.get_backend_for_host = remembered_per_host(
        DomainDispatcherApplication.get_backend_for_host)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _applied = True


def remembered_per_host(lookup: Callable[[Any, str | None], Any]) -> Callable[[Any, str | None], Any]:
    """``lookup(self, host)``, computed once per host name. Hosts with no backend are not remembered."""
    found: dict[str | None, Any] = {}
    lock = threading.Lock()

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host in found:
            return found[host]
        backend = lookup(self, host)
        if backend:
            with lock:
                found[host] = backend
        return backend

    get_backend_for_host.__wrapped__ = lookup  # type: ignore[attr-defined]
    return get_backend_for_host
