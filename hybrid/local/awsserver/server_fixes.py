"""Fixes to moto's HTTP front end (its server mode), applied by the emulator launcher before the server starts.

Measured with py-spy on moto 5.2.5 under a steady load of small SQS and S3 calls (``benchmarks/bench_aws.py``):

1. Every request looks up its backend twice, and the second lookup calls ``backends.list_of_moto_modules()``, which
   lists moto's package folder and stats each of its ~270 entries: a quarter of the server's CPU per call.
   Fix: remember the backend found for each host name. The answer depends on the host name alone (the folder
   listing and the URL patterns never change while the server runs).
2. Werkzeug's request handler writes one INFO log line per request (a formatted line and a lock) that nobody
   reads: about 3 % of the server's CPU. Fix: its logger logs warnings and errors only.
3. Werkzeug's development server answers every request with ``Connection: close`` (Python's ``http.server`` does
   not drain a request body the application left unread, so it dares not read a next request). Every boto3 call
   therefore opened a new TCP connection, and the server started a new thread for it. Fix (``serve``):
   ``drain_request_bodies`` reads whatever body the application left unread once the response is done, and
   ``KeepAliveRequestHandler`` then keeps HTTP/1.1 connections open. It also turns off werkzeug's own drain
   (reading the socket for 10 ms after each answer: on a kept-alive connection that would eat the next request)
   and Nagle's algorithm. Chunked request bodies keep werkzeug's behaviour and close the connection.
4. moto converts attribute names from CamelCase to snake_case character by character, about 20 of them for every
   SQS send and every ``GetQueueAttributes`` (for each name asked, moto computes all the queue's attributes three
   times): with yappi, 14 % of the server's CPU during a cold burst. Fix: the conversion, a pure function of its
   argument, is memoised where SQS and the request dispatch call it.
5. To check that an action exists, every request lists its response class's methods with ``inspect.getmembers``
   (hundreds of them for EC2; ``benchmarks/bench_aws.py`` figures in the README). Fix: the list is remembered per
   class; moto never adds a method to a response class while it serves.
6. The preloaded services (EC2 alone brings 1,301 AMI records) make a large heap that every full garbage collection
   walked: 120-160 ms, during which no request was answered, several times a minute under load. ``freeze_heap``,
   called once the services are loaded, moves everything alive then out of the collector's reach; full collections
   now take 20-35 ms (measured with ``gc.callbacks`` during the demo).

``apply()`` refuses any moto version but the pinned one, like ``sqs_fixes``.
"""
from __future__ import annotations

import functools
import gc
import logging
import socket
import threading
from typing import Any, Callable, Iterable

from hybrid.local.awsserver.sqs_fixes import require_pinned_moto

_applied = False
IDLE_CONNECTION_SECONDS = 300
BODY_DRAINED = "hybrid.body_drained"  # environ key: called once the request body has been read to its end


def apply() -> None:
    """Patches moto's server dispatcher in this process. Idempotent."""
    global _applied
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    require_pinned_moto("server fixes")
    if _applied:
        return
    DomainDispatcherApplication.get_backend_for_host = remembered_per_host(
        DomainDispatcherApplication.get_backend_for_host)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    memoise_name_conversion()
    memoise_method_names()
    _applied = True


def memoise_name_conversion() -> None:
    """``camelcase_to_underscores``, remembered per argument, in the modules that call it per request."""
    import moto.core.responses
    import moto.core.utils
    import moto.sqs.models

    _memoise("camelcase_to_underscores", 4096, moto.core.utils, moto.core.responses, moto.sqs.models)


def freeze_heap() -> None:
    """Collects the garbage, then freezes every object alive now: later collections skip them (see fix 6)."""
    gc.collect()
    gc.freeze()


def memoise_method_names() -> None:
    """``method_names_from_class``, remembered per class, where the request dispatch calls it."""
    import moto.core.responses

    _memoise("method_names_from_class", 256, moto.core.responses)


def _memoise(name: str, size: int, *modules: Any) -> None:
    """Replaces the function ``name`` in each module by one ``lru_cache`` of moto's original; applied again, it
    caches the original anew, never a cache of a cache."""
    current = getattr(modules[0], name)
    remembered = functools.lru_cache(maxsize=size)(getattr(current, "__wrapped__", current))
    for module in modules:
        setattr(module, name, remembered)


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


def serve(host: str, port: int, preload: Iterable[str] = ()) -> Any:
    """moto's WSGI application on a threaded werkzeug server with keep-alive connections; call ``serve_forever``.
    The services in ``preload`` are loaded before it returns (see ``preload_services``)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    dispatcher = DomainDispatcherApplication(create_backend_app)
    preload_services(dispatcher, preload)
    return make_server(host, port, drain_request_bodies(dispatcher), threaded=True,
                       request_handler=keep_alive_handler())


def preload_services(dispatcher: Any, services: Iterable[str]) -> None:
    """Builds each service's moto application now. moto builds one on the service's first request, while holding
    the lock that every request takes; EC2's (importing ``moto.ec2``) took 1.1-1.8 s here, and stalled every S3 and
    SQS call in flight behind the first EC2 call of a new server."""
    for service in services:
        if service not in dispatcher.app_instances:
            dispatcher.app_instances[service] = dispatcher.create_app(service)


def drain_request_bodies(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wraps a WSGI app so that a length-delimited request body is read to its end once the response is sent."""
    from werkzeug.wsgi import LimitedStream

    def drained(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = None
        if not environ.get("wsgi.input_terminated"):
            body = LimitedStream(environ["wsgi.input"], _content_length(environ))
            environ["wsgi.input"] = body
        try:
            yield from app(environ, start_response)
        finally:
            if body is not None:
                body.exhaust()
                environ.get(BODY_DRAINED, _nothing)()

    return drained


def _content_length(environ: dict[str, Any]) -> int:
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def _nothing() -> None:
    return None


class _PausableReader:
    """The connection's read side; reads nothing while paused (between a drained request and the next one)."""

    def __init__(self, raw: Any) -> None:
        self._raw, self.paused = raw, False

    def read(self, size: int = -1) -> bytes:
        return b"" if self.paused else self._raw.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def keep_alive_handler() -> type:
    """moto's request handler, minus the ``Connection: close`` werkzeug adds to every answer."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class KeepAliveRequestHandler(MotoRequestHandler):
        timeout = IDLE_CONNECTION_SECONDS  # an idle client connection ends after this long

        def setup(self) -> None:
            super().setup()
            # Answers go out in several small writes; on a kept-alive connection Nagle's algorithm would hold each
            # one back until the client's delayed ACK (40 ms), and an S3 upload's "100 Continue" for up to 1 s.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.rfile = _PausableReader(self.rfile)

        def handle_one_request(self) -> None:
            self.rfile.paused = False
            super().handle_one_request()

        def make_environ(self) -> dict[str, Any]:
            environ = super().make_environ()
            environ[BODY_DRAINED] = self._pause_reads
            return environ

        def _pause_reads(self) -> None:
            # werkzeug then finds nothing to "drain" and leaves the next request on the socket
            self.rfile.paused = True

        def send_header(self, keyword: str, value: str) -> None:
            if keyword.lower() == "connection" and value.lower() == "close" and self._reusable():
                return
            super().send_header(keyword, value)

        def _reusable(self) -> bool:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            return not chunked and not self.close_connection

    return KeepAliveRequestHandler
