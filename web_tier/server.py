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

from hybrid.core import logs
from hybrid.core.decoding import warm_decoder
from hybrid.core.settings import Settings
from web_tier import front, metrics
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
                   "on_starting": self._prepare_run, "when_ready": self._start_front, "on_exit": self._stop_front}
        for key, value in options.items():
            self.cfg.set(key, value)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.front_died:
                raise front.FrontError("nginx, the web tier's front, stopped (its messages are above): the web tier "
                                       "stopped with it")

    def _prepare_run(self, arbiter: Any) -> None:
        """gunicorn's on_starting hook, in the master before any fork: the log format, and this run's private,
        empty metrics folder (``web_tier.metrics``) under the front's folder."""
        logs.use_format(self.settings.log.format)
        metrics.use_multiprocess_dir(self.paths.prefix / "prometheus")

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
            "worker_exit": _close_runtime, "child_exit": _process_died, "accesslog": None, "errorlog": "-",
            "loglevel": "info", "logger_class": _logger_class(settings.log.format),
            "proc_name": f"hybrid-web-{settings.stack}", "preload_app": False,
            # One shared control socket in $HOME would make two servers on one machine collide.
            "control_socket_disable": True}


def _logger_class(kind: str) -> Any:
    """gunicorn's own log lines (its error log): its usual text, or JSON like the others."""
    from gunicorn.glogging import Logger

    if kind == "text":
        return Logger

    class FormattedLogger(Logger):
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            logs.use_format(kind, self.error_log)

    return FormattedLogger


def _process_died(server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook, in the master: the dead process's live gauges stop counting."""
    metrics.process_died(worker.pid)


def _close_runtime(server: Any, worker: Any) -> None:
    """gunicorn's worker_exit hook: flush the cache and delete this process's reply queue."""
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("hybrid") if app is not None else None
    if runtime is not None:
        runtime.close()
