"""`hybrid web`: the Flask app served by gunicorn (threaded workers), configured from the settings."""
from __future__ import annotations

import gc
import logging
from typing import Any

from gunicorn.app.base import BaseApplication

from hybrid.core.decoding import warm_decoder
from hybrid.core.settings import Settings
from web_tier.app import create_app

log = logging.getLogger(__name__)
READY_LINE = "hybrid web tier ready"


class WebServer(BaseApplication):
    """gunicorn with the app built inside each worker process, after the fork (its threads must start there)."""

    def __init__(self, settings: Settings, processes: int = 1) -> None:
        self.settings, self.processes = settings, processes
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings, self.processes).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        logging.getLogger("web_tier").setLevel(logging.INFO)
        warm_decoder()  # every upload is decoded to vet it (``check_image``); the first one should not import PIL's
        app = create_app(self.settings)
        # Flask, the boto3 clients and their service models live as long as the process: out of the garbage
        # collector's reach, a full collection no longer walks them (one took 60-100 ms here, stalling every request).
        gc.collect()
        gc.freeze()
        # The line an operator (and the OpenStack console log) looks for: this process answers from now on.
        print(f"{READY_LINE}: stack {self.settings.stack} on http://{self.settings.web.bind}/", flush=True)
        return app


def gunicorn_options(settings: Settings, processes: int) -> dict[str, Any]:
    web = settings.web
    return {"bind": web.bind, "workers": processes, "worker_class": "gthread", "threads": web.threads,
            "timeout": int(web.request_timeout) + 30, "graceful_timeout": 10, "keepalive": 5,
            "worker_exit": _close_runtime, "accesslog": None, "errorlog": "-", "loglevel": "info",
            "proc_name": f"hybrid-web-{settings.stack}", "preload_app": False,
            # One shared control socket in $HOME would make two servers on one machine collide.
            "control_socket_disable": True}


def _close_runtime(server: Any, worker: Any) -> None:
    """gunicorn's worker_exit hook: flush the cache and delete this process's reply queue."""
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("hybrid") if app is not None else None
    if runtime is not None:
        runtime.close()
