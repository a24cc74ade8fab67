"""The local AWS server stopped (killed, as a crash does it) and started again by `hybrid local up`: the web tier
stays live but says it is not ready while the server is gone, and the service answers right within 10 s of the
restart, with no other step: the new server takes the old one's port, `local up` sets the stack up again, and the
web tier and autoscaler follow it without a restart."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from hybrid.core.localserver import read_record
from tests.chaos.local_service import LocalService, variant, wait_until

pytestmark = pytest.mark.timeout(180)
RIGHT_WITHIN = 10.0


def test_the_service_answers_right_within_10_s_of_a_local_aws_server_restart(tmp_path):
    with LocalService("chaos-restart") as service:
        right = service.labels_of(("coffee",))["coffee"]
        server = read_record(service.state_dir)
        os.kill(server.pid, signal.SIGKILL)
        wait_until(lambda: service.get("/readyz")[0] == 503, timeout=30)
        while_down = {path: service.get(path)[0] for path in ("/healthz", "/readyz", "/status")}
        miss_while_down = service.ask("coffee-down.jpg", variant("coffee", 1))[0]

        restarted = time.monotonic()
        up = {}
        runner = threading.Thread(target=lambda: up.update(result=service.hybrid("local", "up")))
        runner.start()
        answer = service.ask_until_answered("coffee-after.jpg", variant("coffee", 2), restarted + 60)
        first_right = time.monotonic() - restarted
        runner.join(timeout=120)
        output = up["result"].stdout
        figure = {"while_down": while_down, "miss_while_down": miss_while_down,
                  "first_right_answer_s": round(first_right, 1), "attempts": answer.attempts,
                  "same_endpoint": read_record(service.state_dir).url == server.url,
                  "services_kept": [name for name in ("autoscaler", "web") if f"{name}: already running" in output],
                  "readyz_after": service.get("/readyz")[0], "dead_letters": service.dead_letters()}
        print(f"\nlocal AWS server killed and restarted: {json.dumps(figure)}")
        assert while_down == {"/healthz": 200, "/readyz": 503, "/status": 200}
        assert miss_while_down == 503
        assert answer.label == right, answer.failures[-3:]
        assert first_right <= RIGHT_WITHIN
        assert figure["same_endpoint"] and figure["services_kept"] == ["autoscaler", "web"], output
        assert figure["readyz_after"] == 200 and figure["dead_letters"] == 0
