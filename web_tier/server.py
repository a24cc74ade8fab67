"""`hybrid web`: the Flask app served by gunicorn (threaded workers) behind nginx (``web_tier.front``), configured
from the settings. gunicorn listens on a unix socket only nginx reaches; nginx listens on ``web.bind``."""
from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from hybrid.core.decoding import warm_decoder
from hybrid.core.settings import Settings
from web_tier import front
from web_tier.app import create_app

log = logging.getLogger(__name__)
READY_LINE = "hybrid web tier ready"


class WebServer(BaseApplication):
    """gunicorn with the app built inside each worker process, after the fork (its threads must start there)."""

    def __init__(self, settings: Settings, processes: int = 1) -> None:
        self.settings, self.processes = settings, processes
        self.paths = front.front_paths(settings)
        front.make_folder(self.paths)
        self.front: subprocess.Popen | None = None
        self.front_died = self.stopping = False
        super().__init__()

    def load_config(self) -> None:
        options = {**gunicorn_options(self.settings, self.processes, self.paths),
                   "when_ready": self._start_front, "on_exit": self._stop_front}
        for key, value in options.items():
            self.cfg.set(key, value)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.front_died:
                raise front.FrontError("nginx, the web tier's front, stopped (its messages are above): the web tier "
                                       "stopped with it")

    def _start_front(self, arbiter: Any) -> None:
        """gunicorn's when_ready hook, in the master once its socket is bound: nginx starts, and is watched."""
        self.front = front.start(self.settings, self.paths)
        threading.Thread(target=self._watch_front, args=(self.front,), name="front-watch", daemon=True).start()

    def _watch_front(self, process: subprocess.Popen) -> None:
        process.wait()
        if not self.stopping:
            log.error("nginx (the front) exited with status %s: stopping the web tier", process.returncode)
            self.front_died = True
            os.kill(os.getpid(), signal.SIGTERM)

    def _stop_front(self, arbiter: Any) -> None:
        self.stopping = True
        if self.front is not None:
            front.stop(self.front)

    def load(self) -> Any:
        logging.getLogger("web_tier").setLevel(logging.INFO)
        warm_decoder()  # every cache miss is vetted (``check_image``); the first one should not import PIL's
        app = create_app(self.settings)
        # Flask, the boto3 clients and their service models live as long as the process: out of the garbage
        # collector's reach, a full collection no longer walks them (one took 60-100 ms here, stalling every request).
        gc.collect()
        gc.freeze()
        # The line an operator (and the OpenStack console log) looks for: this process answers from now on.
        print(f"{READY_LINE}: stack {self.settings.stack} on http://{self.settings.web.bind}/", flush=True)
        return app


def gunicorn_options(settings: Settings, processes: int, paths: front.FrontPaths) -> dict[str, Any]:
    web = settings.web
    return {"bind": f"unix:{paths.socket}", "workers": processes, "worker_class": "gthread", "threads": web.threads,
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
