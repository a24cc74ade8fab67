"""The web tier's Flask app: ``create_app(settings)``, or ``create_app(settings, runtime)`` with given parts.

    POST / or /upload   one image (multipart field inputFile, myfile, or any single file field)
                        -> 200 text/plain "name:label"; JSON (label, top-5, cached, timings) with
                        Accept: application/json
    GET /healthz        liveness: 200 "ok" while the reply dispatcher and the request sender run; else 503 saying
                        which (restart the process). It does not look at the cloud.
    GET /readyz         readiness: 200 "ready" when, besides that, the request and reply queues and the input and
                        output buckets answer; else 503 naming the thread stopped or the first of them that fails
                        (the local AWS server is down, the stack is not set up: send no traffic here, no restart)
    GET /status         JSON: queue depths, fleet size, cache entries and hit rate, requests in flight
    GET /metrics        Prometheus text (``web_tier.metrics``: every server process's counts together)
    (/status and /metrics answer only from the machine itself: the front, ``web_tier.front``, refuses them with 403
    from anywhere else)

Every answer carries ``X-Request-Id``: the request's own when it sent a sane one (``hybrid.core.logs``), else a new
one; the log lines made while answering it, and the worker's for its image, carry the same id.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from hybrid.core import logs
from hybrid.core.errors import HybridError
from hybrid.core.settings import Settings
from web_tier.metrics import CONTENT_TYPE
from web_tier.runtime import WebRuntime, build_runtime
from web_tier.service import ImageRejected, Outcome, RequestTimeout
from web_tier.uploads import Upload, UploadError, check_image, read_upload

log = logging.getLogger("web_tier.requests")
MULTIPART_OVERHEAD = 64 * 1024
REQUEST_ID_HEADER = "X-Request-Id"
FORM = """<!doctype html><title>hybrid</title><h1>Image recognition</h1>
<form method=post enctype=multipart/form-data><input type=file name=inputFile accept="image/*">
<input type=submit value=Classify></form><p>Or: <code>curl -F inputFile=@cat.jpg {url}</code></p>"""


def create_app(settings: Settings, runtime: WebRuntime | None = None) -> Flask:
    app = Flask("web_tier")
    app.config["MAX_CONTENT_LENGTH"] = settings.web.max_upload_bytes + MULTIPART_OVERHEAD
    if runtime is None:
        runtime = build_runtime(settings)
    app.extensions["hybrid"] = runtime
    app.extensions["hybrid.max_upload"] = settings.web.max_upload_bytes
    _register_routes(app)
    app.before_request(_enter_request_scope)
    app.after_request(_log_request)
    app.teardown_request(_leave_request_scope)
    return app


def runtime_of(app: Flask) -> WebRuntime:
    return app.extensions["hybrid"]


def _register_routes(app: Flask) -> None:
    app.add_url_rule("/", "upload", _upload, methods=["POST"])
    app.add_url_rule("/upload", "upload_alias", _upload, methods=["POST"])
    app.add_url_rule("/", "form", lambda: Response(FORM.format(url=request.url_root), mimetype="text/html"))
    app.add_url_rule("/healthz", "healthz", _healthz)
    app.add_url_rule("/readyz", "readyz", _readyz)
    app.add_url_rule("/status", "status", lambda: jsonify(runtime_of(_app()).status()))
    app.add_url_rule("/metrics", "metrics", _metrics)
    app.register_error_handler(HTTPException, _http_error)


def _app() -> Flask:
    from flask import current_app

    return current_app  # type: ignore[return-value]


def _enter_request_scope() -> None:
    """The request's id: its sane ``X-Request-Id``, else a new one; the log lines made for it carry it."""
    g.request_id = logs.sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or logs.new_request_id()
    g.request_token = logs.enter_request(g.request_id)


def _leave_request_scope(error: BaseException | None) -> None:
    token = g.pop("request_token", None)
    if token is not None:
        logs.leave_request(token)


def _upload() -> Response:
    g.started = time.perf_counter()
    with runtime_of(_app()).metrics.in_progress.track_inprogress():
        return _classify_upload(runtime_of(_app()))


def _classify_upload(runtime: WebRuntime) -> Response:
    try:
        upload = read_upload(request.files, _app().extensions["hybrid.max_upload"])
        g.name = upload.name
        runtime.metrics.upload_bytes.observe(len(upload.data))
        outcome = runtime.service.classify(upload, check=check_image, request_id=g.request_id)
    except UploadError as exc:
        return _fail(exc.status, str(exc), "bad_request")
    except ImageRejected as exc:
        return _fail(422, f"the app tier could not classify this image: {exc}", "rejected")
    except RequestTimeout as exc:
        return _fail(504, str(exc), "timeout")
    except HybridError as exc:
        log.error("request failed: %s", exc)
        return _fail(503, f"the service is unavailable: {exc}", "unavailable")
    return _answer(upload, outcome)


def _answer(upload: Upload, outcome: Outcome) -> Response:
    g.label, g.outcome = outcome.label, "hit" if outcome.cached else "shared" if outcome.shared else "miss"
    _observe(200)
    if _wants_json():
        return jsonify(name=upload.name, label=outcome.label, top5=[[label, p] for label, p in outcome.top5],
                       cached=outcome.cached, shared=outcome.shared, model=outcome.model, timings=outcome.timings)
    return Response(f"{upload.name}:{outcome.label}", mimetype="text/plain")


def _fail(status: int, message: str, outcome: str) -> Response:
    g.outcome = outcome
    _observe(status)
    if _wants_json():
        response = jsonify(error=message, status=status)
    else:
        response = Response(f"error: {message}\n", mimetype="text/plain")
    response.status_code = status
    return response


def _observe(status: int) -> None:
    runtime_of(_app()).metrics.observe(g.get("outcome", "error"), status, time.perf_counter() - g.started)


def _http_error(exc: HTTPException) -> Response:
    if isinstance(exc, RequestEntityTooLarge):
        g.started = g.get("started", time.perf_counter())
        limit = _app().extensions["hybrid.max_upload"]
        return _fail(413, f"the request body is larger than the {limit}-byte limit", "bad_request")
    response = Response(f"error: {exc.description}\n", mimetype="text/plain")
    response.status_code = exc.code or 500
    return response


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/plain", "application/json"]) == "application/json"


def _healthz() -> Response:
    problems = runtime_of(_app()).problems()
    return Response("; ".join(problems) + "\n" if problems else "ok\n", status=503 if problems else 200,
                    mimetype="text/plain")


def _readyz() -> Response:
    problems = runtime_of(_app()).readiness()
    return Response("\n".join(problems) + "\n" if problems else "ready\n", status=503 if problems else 200,
                    mimetype="text/plain")


def _metrics() -> Response:
    runtime = runtime_of(_app())
    return Response(runtime.metrics.render(runtime.gauges()), content_type=CONTENT_TYPE)


def _log_request(response: Response) -> Response:
    details: list[Any] = [request.method, request.path, response.status_code]
    if request.method == "POST":
        details += [f"name={g.get('name', '-')}", f"label={g.get('label', '-')}", f"outcome={g.get('outcome', '-')}"]
    if "started" in g:
        details.append(f"{(time.perf_counter() - g.started) * 1000:.1f}ms")
    log.info(" ".join(str(d) for d in details))
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    return response
