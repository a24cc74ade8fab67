import http.server
import threading

import pytest

from app_tier.service import own_instance_id
from app_tier.termination import SelfTerminator, instance_id_from_cloud_init, instance_id_from_metadata
from hybrid.core.errors import CloudError, HybridError
from hybrid.core.messages import ClassifyReply, ClassifyRequest, MalformedMessage


def test_a_request_round_trips_and_fits_the_1kb_queue():
    request = ClassifyRequest("0" * 32, "sha256/" + "f" * 64, "n" * 200, "stack-name-responses-web-12345")
    assert ClassifyRequest.from_body(request.to_body()) == request
    assert len(request.to_body().encode()) < 1024


@pytest.mark.parametrize("body", ["", "[]", "{}", '{"v": 2, "id": "a", "key": "k", "name": "n", "reply_to": "q"}',
                                  '{"v": 1, "id": "a", "key": "k", "reply_to": "q"}',
                                  '{"v": 1, "id": "a", "key": "k", "name": "../etc/passwd", "reply_to": "q"}',
                                  '{"v": 1, "id": "a", "key": "k", "name": "a\\nb", "reply_to": "q"}'])
def test_malformed_requests_are_rejected(body):
    with pytest.raises(MalformedMessage):
        ClassifyRequest.from_body(body)


def test_a_reply_round_trips():
    reply = ClassifyReply("id", "cat", "tabby", (("tabby", 0.5), ("tiger cat", 0.25)), "m@1")
    assert ClassifyReply.from_body(reply.to_body()) == reply
    assert not ClassifyReply("id", "x", error="bad image").ok


def test_self_termination_falls_back_to_an_os_shutdown_only_when_given():
    calls = []

    def failing_api(ids):
        raise CloudError("UnauthorizedOperation")
    SelfTerminator(failing_api, "i-1", os_fallback=lambda: calls.append("shutdown"))()
    assert calls == ["shutdown"]
    with pytest.raises(HybridError):
        SelfTerminator(failing_api, "i-1")()
    SelfTerminator(lambda ids: calls.append(ids), "i-2")()
    assert calls[-1] == ["i-2"]


class FakeMetadataService(http.server.BaseHTTPRequestHandler):
    """IMDSv2 on loopback: a token from PUT, the instance id only with that token."""

    def do_PUT(self):
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self._answer(200 if ok else 400, b"token-123")

    def do_GET(self):
        ok = self.path == "/latest/meta-data/instance-id" and self.headers.get("X-aws-ec2-metadata-token") == \
            "token-123"
        self._answer(200 if ok else 401, b"i-0abc")

    def _answer(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_instance_id_comes_from_imdsv2_with_a_session_token():
    server = http.server.HTTPServer(("127.0.0.1", 0), FakeMetadataService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert instance_id_from_metadata(f"http://127.0.0.1:{server.server_port}") == "i-0abc"
    finally:
        server.shutdown()
    with pytest.raises(HybridError, match="instance metadata service"):
        instance_id_from_metadata("http://127.0.0.1:9", timeout=0.5)


def test_cloud_init_records_the_machine_s_instance_id(tmp_path):
    recorded = tmp_path / "instance-id"
    recorded.write_text("i-0123456789abcdef0\n")
    assert instance_id_from_cloud_init(recorded) == "i-0123456789abcdef0"
    assert instance_id_from_cloud_init(tmp_path / "absent") == ""


def metadata_must_not_be_asked() -> str:
    raise AssertionError("the instance metadata service was asked")


def test_the_given_id_wins_then_cloud_init_then_the_metadata_service_on_aws_only():
    assert own_instance_id("i-given", True, lambda: "i-cloud", metadata_must_not_be_asked) == "i-given"
    assert own_instance_id("", True, lambda: "i-cloud", metadata_must_not_be_asked) == "i-cloud"
    assert own_instance_id("", False, lambda: "i-cloud", metadata_must_not_be_asked) == "i-cloud"
    assert own_instance_id("", True, lambda: "", lambda: "i-imds") == "i-imds"
    assert own_instance_id("", False, lambda: "", metadata_must_not_be_asked) == ""
