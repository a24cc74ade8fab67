"""Log lines as text or JSON, each with the request id of the work it belongs to; the id in the request message."""
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

from hybrid.core import logs
from hybrid.core.messages import ClassifyRequest, requests_from_body


@pytest.fixture
def captured():
    """A logger of its own whose one handler writes to a buffer, set up as ``use_format`` sets up the root's."""
    def make(kind):
        buffer = io.StringIO()
        logger = logging.getLogger(f"test.logs.{kind}")
        logger.handlers[:] = [logging.StreamHandler(buffer)]
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logs.use_format(kind, logger)
        return logger, buffer
    return make


def lines(buffer):
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_process_and_the_scope_s_request_id(captured):
    logger, buffer = captured("json")
    logger.info("outside")
    with logs.request_scope("req-1"):
        logger.warning("inside %s of %d", "one", 2)
    outside, inside = lines(buffer)
    assert "request_id" not in outside and outside["message"] == "outside"
    assert inside["request_id"] == "req-1" and inside["message"] == "inside one of 2"
    assert inside["level"] == "WARNING" and inside["logger"] == "test.logs.json" and inside["process"] > 0
    assert inside["ts"].endswith("Z") and inside["ts"][10] == "T" and len(inside["ts"]) == 24


def test_a_record_s_own_request_id_wins_and_a_traceback_stays_in_its_line(captured):
    logger, buffer = captured("json")
    with logs.request_scope("scope"):
        logger.info("mine", extra={"request_id": "own"})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("failed")
    own, failed = lines(buffer)
    assert own["request_id"] == "own"
    assert failed["request_id"] == "scope" and "ValueError: boom" in failed["exc"] and "Traceback" in failed["exc"]
    assert len(buffer.getvalue().splitlines()) == 2, "one line per record, newlines escaped"


def test_text_lines_name_the_request_id_at_their_end_only_when_there_is_one(captured):
    logger, buffer = captured("text")
    logger.info("plain")
    with logs.request_scope("abc"):
        logger.info("scoped")
    plain, scoped = buffer.getvalue().splitlines()
    assert plain.endswith("INFO test.logs.text: plain")
    assert scoped.endswith("INFO test.logs.text: scoped [request_id=abc]")


def test_a_scope_ends_with_its_block_and_does_not_leak_into_other_threads():
    with logs.request_scope("outer"):
        with logs.request_scope("inner"):
            assert logs.current_request_id() == "inner"
        assert logs.current_request_id() == "outer"
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(logs.current_request_id).result() == ""
            assert pool.submit(logs.in_request_scope, "handed", logs.current_request_id).result() == "handed"
            assert pool.submit(logs.current_request_id).result() == "", "the pool thread's scope ended"
    assert logs.current_request_id() == ""


@pytest.mark.parametrize("value, sane", [
    ("9f0c2b", True), ("client.req-42:a_b", True), ("x" * 64, True), ("x" * 65, False), ("", False),
    ("a b", False), ("id\n", False), ("<script>", False), ("é", False), (None, False), (42, False),
])
def test_only_a_sane_incoming_request_id_is_kept(value, sane):
    assert logs.sane_request_id(value) == (value if sane else "")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="text, json"):
        logs.formatter("xml")


def test_the_request_id_travels_in_the_request_message_and_old_messages_stay_valid():
    request = ClassifyRequest("c0ffee", "sha256/ab", "cat", "replies-1", "req-7")
    body = json.loads(request.to_body())
    assert body["request_id"] == "req-7" and body["id"] == "c0ffee"
    assert ClassifyRequest.from_body(request.to_body()) == request
    old = ClassifyRequest("c0ffee", "sha256/ab", "cat", "replies-1")
    assert "request_id" not in json.loads(old.to_body()), "no empty field for a message without one"
    assert ClassifyRequest.from_body(old.to_body()).request_id == ""
    assert ClassifyRequest.from_body(old.to_body()).log_id == "c0ffee", "an old message logs its correlation id"
    odd = json.dumps({**body, "request_id": "has space\n"})
    assert requests_from_body(odd) == [ClassifyRequest("c0ffee", "sha256/ab", "cat", "replies-1")]
