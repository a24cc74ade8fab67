"""The workload generator's pure parts: inputs, retries, outcomes, the report and the command's usage errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from hybrid.cli.workload import workload
from hybrid.core.errors import ConfigError
from hybrid.tools.workload import (CORRECT, FAILED, WRONG, RequestRecord, SessionPool, Target, WorkloadReport,
                                   BACKOFF, check_url, classify, find_images, image_key, percentile,
                                   plan_requests, post_with_retries, read_expected, run_workload, send_image)


def record(index: int, outcome: str = CORRECT, latency: float = 1.0, started: float = 100.0,
           attempts: int = 1, status: int | None = 200) -> RequestRecord:
    return RequestRecord(index, f"img{index}.jpg", f"img{index}", status, f"img{index}:cat", f"img{index}:cat",
                         outcome, started, started + latency, latency, attempts)


# ---------------------------------------------------------------- percentiles

@pytest.mark.parametrize("q, expected", [(0, 1.0), (50, 50.5), (95, 95.05), (99, 99.01), (100, 100.0)])
def test_percentile_interpolates_between_closest_ranks(q, expected):
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_one_value_and_of_none():
    assert percentile([2.5], 99) == 2.5
    assert percentile([], 50) == 0.0


# ---------------------------------------------------------------- inputs

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_expected_labels_with_a_header(tmp_path):
    csv_path = write(tmp_path / "e.csv", "name,label\ncat,tabby\ndog.JPG, golden retriever \n\n")
    assert read_expected(csv_path) == {"cat": "tabby", "dog": "golden retriever"}


def test_expected_labels_in_the_course_format(tmp_path):
    """The course's header ``Image,Results`` (its generators read ``df['Image']``, ``df['Results']``)."""
    csv_path = write(tmp_path / "e.csv", "Image,Results\ntest_000,tabby\ntest_001,golden retriever\n")
    assert read_expected(csv_path) == {"test_000": "tabby", "test_001": "golden retriever"}


def test_expected_labels_without_a_header_and_with_a_bom(tmp_path):
    csv_path = write(tmp_path / "e.csv", "\ufeffcat,tabby\r\n\"a,b\",\"label, with comma\"\r\n")
    assert read_expected(csv_path) == {"cat": "tabby", "a,b": "label, with comma"}


@pytest.mark.parametrize("text, line", [
    ("name,label\ncat\n", 2), ("cat,tabby,extra\n", 1), ("cat,\n", 1), (",tabby\n", 1),
    ("cat,tabby\ncat,lion\n", 2),
])
def test_bad_expected_rows_name_the_line(tmp_path, text, line):
    with pytest.raises(ConfigError, match=f"line {line}"):
        read_expected(write(tmp_path / "e.csv", text))


@pytest.mark.parametrize("text", ["", "name,label\n", "\n\n"])
def test_an_expected_file_without_rows_is_refused(tmp_path, text):
    with pytest.raises(ConfigError, match="no name,label rows"):
        read_expected(write(tmp_path / "e.csv", text))


def test_an_unreadable_expected_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_expected(tmp_path / "missing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read"):
        read_expected(tmp_path / "binary.csv")


def test_a_repeated_row_with_the_same_label_is_fine(tmp_path):
    assert read_expected(write(tmp_path / "e.csv", "cat,tabby\ncat.png,tabby\n")) == {"cat": "tabby"}


def test_images_are_found_by_extension_in_any_case_and_sorted(tmp_path):
    for name in ("b.JPG", "a.png", "c.webp", "d.Jpeg", "e.gif", "f.bmp", "notes.txt", ".hidden.jpg", "noext"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["a.png", "b.JPG", "c.webp", "d.Jpeg", "e.gif", "f.bmp"]


def test_a_folder_without_images_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ConfigError, match="no images"):
        find_images(tmp_path)
    with pytest.raises(ConfigError, match="not a folder"):
        find_images(tmp_path / "readme.txt")


def test_image_key_drops_only_an_image_extension():
    assert [image_key(n) for n in ("cat.jpg", "dog.v2.PNG", "x/y/z.gif", "plain")] == ["cat", "dog.v2", "z", "plain"]


def test_requests_cycle_through_the_images():
    images = [Path("a.jpg"), Path("b.jpg"), Path("c.jpg")]
    assert plan_requests(images, None) == images
    assert [p.name for p in plan_requests(images, 7)] == ["a.jpg", "b.jpg", "c.jpg", "a.jpg", "b.jpg", "c.jpg",
                                                         "a.jpg"]
    assert plan_requests(images, 2) == images[:2]


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host/", "http://", "http://host:notaport/", ""])
def test_bad_urls_are_refused(url):
    with pytest.raises(ConfigError, match="--url"):
        check_url(url)


def test_good_urls_pass():
    assert check_url("http://127.0.0.1:8000/upload") == "http://127.0.0.1:8000/upload"
    assert check_url("https://web.example") == "https://web.example"


def test_run_refuses_expected_labels_that_miss_an_image(tmp_path):
    images = [tmp_path / "cat.jpg", tmp_path / "dog.jpg"]
    with pytest.raises(ConfigError, match="no label for 1 image"):
        run_workload("http://127.0.0.1:9/", images, expected={"cat": "tabby"})


# ---------------------------------------------------------------- retries

class FakeResponse:
    def __init__(self, status: int, text: str = "") -> None:
        self.status_code, self.content = status, text.encode()


def scripted(*outcomes):
    """A post callable answering each outcome in turn: an int status, or an exception to raise."""
    calls = []

    def post():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return FakeResponse(outcome, f"{outcome} body\n")
    return post, calls


def test_503_and_502_are_retried_with_jittered_doubling_backoff():
    post, _ = scripted(503, 502, 200)
    sleeps: list[float] = []
    reply = post_with_retries(post, retries=3, sleep=sleeps.append, rand=lambda: 0.5)
    assert (reply.status, reply.answer, reply.attempts) == (200, "200 body", 3)
    assert sleeps == [0.1, 0.2], "half of the ceilings 0.2 s and 0.4 s"


def test_connection_errors_are_retried():
    post, _ = scripted(requests.ConnectionError("refused"), requests.ConnectionError("reset"), 200)
    reply = post_with_retries(post, retries=2, sleep=lambda s: None)
    assert (reply.status, reply.attempts) == (200, 3)


@pytest.mark.parametrize("status", [400, 404, 413, 422, 500, 504])
def test_answers_other_than_502_503_are_not_retried(status):
    post, calls = scripted(status, 200)
    reply = post_with_retries(post, retries=3, sleep=lambda s: None)
    assert (reply.status, reply.attempts, len(calls)) == (status, 1, 1)


def test_a_read_timeout_is_not_retried():
    post, _ = scripted(requests.ReadTimeout("slow"), 200)
    reply = post_with_retries(post, retries=3, sleep=lambda s: None)
    assert reply.status is None and "ReadTimeout" in reply.answer and reply.attempts == 1


@pytest.mark.parametrize("retries", [0, 1, 2, 5])
def test_retries_give_up_with_the_last_reply_after_exactly_retries_plus_one_tries(retries):
    post, calls = scripted(*[503] * (retries + 2))
    sleeps: list[float] = []
    reply = post_with_retries(post, retries=retries, sleep=sleeps.append)
    assert (reply.status, reply.attempts, len(calls), len(sleeps)) == (503, retries + 1, retries + 1, retries)
    assert all(0 <= s <= BACKOFF.ceiling(n) for n, s in enumerate(sleeps, 1))
    post, calls = scripted(*[requests.ConnectionError("refused")] * 2)
    reply = post_with_retries(post, retries=1, sleep=lambda s: None)
    assert reply.status is None and reply.answer.startswith("ConnectionError: refused") and reply.attempts == 2


class ScriptedSessions:
    """A SessionPool whose one session answers from ``post``."""

    def __init__(self, post):
        self.post = post

    def get(self):
        return self

    def prepare_request(self, request):
        return request

    def send(self, prepared, timeout):
        return self.post()


def test_the_workload_sends_each_request_retries_plus_one_times_at_most(tmp_path):
    """Through send_image, as `hybrid workload --retries 2` does: a web tier that always answers 503."""
    post, calls = scripted(*[503] * 5)
    (tmp_path / "cat.jpg").write_bytes(b"x")
    sleeps: list[float] = []
    target = Target("http://127.0.0.1:9/", "inputFile", 1.0, 2, None, ScriptedSessions(post), sleep=sleeps.append)
    record = send_image(target, 0, tmp_path / "cat.jpg")
    assert (record.outcome, record.status, record.attempts, len(calls), len(sleeps)) == (FAILED, 503, 3, 3, 2)


def test_an_image_that_cannot_be_read_is_a_failed_request_not_a_crash(tmp_path):
    target = Target("http://127.0.0.1:9/", "inputFile", 1.0, 0, {"gone": "cat"}, SessionPool())
    failed = send_image(target, 4, tmp_path / "gone.jpg")
    assert (failed.index, failed.outcome, failed.status, failed.attempts) == (4, FAILED, None, 0)
    assert failed.answer.startswith("cannot read the image") and failed.expected == "gone:cat"


# ---------------------------------------------------------------- outcomes

@pytest.mark.parametrize("status, answer, label, outcome", [
    (200, "cat:tabby", "tabby", CORRECT),
    (200, "cat:tabby", None, CORRECT),
    (200, "cat:tiger", "tabby", WRONG),
    (200, "dog:tabby", "tabby", WRONG),
    (200, "dog:tabby", None, WRONG),
    (200, "tabby", None, WRONG),
    (200, "cat:", None, WRONG),
    (200, ":tabby", None, WRONG),
    (200, "", "tabby", WRONG),
    (503, "error: unavailable", "tabby", FAILED),
    (504, "error: timed out", None, FAILED),
    (400, "cat:tabby", "tabby", FAILED),
    (None, "ConnectionError: refused", "tabby", FAILED),
])
def test_outcome_of_a_reply(status, answer, label, outcome):
    assert classify("cat", status, answer, label) == outcome


# ---------------------------------------------------------------- the report

def test_summary_counts_latencies_and_throughput():
    records = [record(i, latency=float(i + 1), started=100.0) for i in range(10)]
    records[3] = record(3, WRONG, latency=4.0, started=100.0)
    records[7] = record(7, FAILED, latency=8.0, started=100.0, attempts=4, status=None)
    summary = WorkloadReport("http://h/", 5, True, records).summary()
    assert (summary["correct"], summary["wrong"], summary["failed"], summary["retries"]) == (8, 1, 1, 3)
    assert summary["latency_s"] == {"avg": 5.5, "p50": 5.5, "p95": 9.55, "p99": 9.91, "max": 10.0}
    assert summary["total_s"] == 10.0 and summary["throughput_rps"] == 1.0
    assert summary["started_at"] == 100.0 and summary["finished_at"] == 110.0
    json.dumps(summary)


def test_exit_code_is_zero_only_when_every_request_is_correct():
    assert WorkloadReport("u", 1, True, [record(0), record(1)]).exit_code == 0
    assert WorkloadReport("u", 1, True, [record(0), record(1, WRONG)]).exit_code == 1
    assert WorkloadReport("u", 1, True, [record(0, FAILED)]).exit_code == 1
    assert WorkloadReport("u", 1, True, []).exit_code == 1


def test_formatted_summary_lists_at_most_ten_problems():
    records = [record(i, WRONG if i % 2 else FAILED, status=None if i % 2 == 0 else 200) for i in range(25)]
    text = WorkloadReport("http://h/", 3, True, records).format_summary()
    assert "25 requests to http://h/ from 3 threads" in text
    assert "correct 0   wrong 12   failed 13" in text
    assert "wrong or failed: 25, the first 10 distinct:" in text
    assert len([line for line in text.splitlines() if "expected 'img" in line]) == 10
    assert "labels were not checked" not in text


def test_examples_skip_repeats_of_the_same_answer():
    repeated = [record(0, WRONG), record(1, FAILED, status=None), record(0, WRONG), record(0, FAILED), record(2)]
    report = WorkloadReport("http://h/", 3, True, repeated)
    assert [(r.index, r.outcome) for r in report.examples()] == [(0, WRONG), (1, FAILED), (0, FAILED)]
    assert "wrong or failed: 4, the first 3 distinct:" in report.format_summary()


def test_formatted_summary_says_when_labels_were_not_checked():
    text = WorkloadReport("http://h/", 3, False, [record(0), record(1)]).format_summary()
    assert "labels were not checked" in text and "wrong or failed" not in text
    assert "latency s: avg 1.000  p50 1.000  p95 1.000  p99 1.000" in text


def test_a_problem_line_shows_what_was_expected_and_what_came_back():
    wrong = RequestRecord(0, "cat.jpg", "cat", 200, "cat:tiger", "cat:tabby", WRONG, 1.0, 2.0, 1.0, 1)
    failed = RequestRecord(1, "dog.png", "dog", None, "ConnectionError: refused", "dog:*", FAILED, 1.0, 2.0, 1.0, 4)
    assert wrong.describe() == "wrong   cat.jpg: expected 'cat:tabby', got 'cat:tiger' (200)"
    assert failed.describe() == "failed  dog.png: expected 'dog:*', got ConnectionError: refused after 4 attempts"


def test_json_report_has_summary_examples_and_records(tmp_path):
    report = WorkloadReport("http://h/", 2, True, [record(0), record(1, WRONG)])
    data = json.loads(report.write_json(tmp_path / "r.json").read_text())
    assert data["summary"]["wrong"] == 1 and [e["index"] for e in data["examples"]] == [1]
    assert set(data["records"][0]) == {"index", "file", "name", "status", "answer", "expected", "outcome",
                                       "started_at", "finished_at", "latency", "attempts"}


# ---------------------------------------------------------------- usage errors: exit 2, one line

def run_cli(*args: str):
    return CliRunner().invoke(workload, list(args))


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"x")
    return folder


def assert_bad_usage(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_folder_without_images_exits_2(tmp_path):
    assert_bad_usage(run_cli("--url", "http://127.0.0.1:9/", "--images", str(tmp_path)), "no images")


@pytest.mark.parametrize("args, message", [
    (["--url", "not-a-url"], "--url 'not-a-url'"),
    (["--url", "http://127.0.0.1:9/", "--expected", "{tmp}/missing.csv"], "cannot read"),
    (["--url", "http://127.0.0.1:9/", "--report", "{tmp}/nowhere/r.json"], "does not exist"),
])
def test_bad_usage_exits_2_with_one_line(tmp_path, images, args, message):
    assert_bad_usage(run_cli("--images", str(images), *[a.format(tmp=tmp_path) for a in args]), message)


def test_expected_labels_missing_an_image_is_bad_usage(tmp_path, images):
    csv_path = write(tmp_path / "e.csv", "dog,golden retriever\n")
    result = run_cli("--url", "http://127.0.0.1:9/", "--images", str(images), "--expected", str(csv_path))
    assert_bad_usage(result, "no label for 1 image(s): cat")


def test_zero_requests_is_bad_usage(images):
    result = run_cli("--url", "http://127.0.0.1:9/", "--images", str(images), "--requests", "0")
    assert result.exit_code == 2


# ---------------------------------------------------------------- the garbage collector during a run

def test_the_callers_objects_are_frozen_out_of_collections_only_while_requests_run(tmp_path, monkeypatch):
    import gc

    import hybrid.tools.workload as workload_module

    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"not sent")
    frozen_while_sending = []

    def fake_send(target, index, image):
        frozen_while_sending.append(gc.get_freeze_count())
        return workload_module.make_record(index, image, workload_module.Reply(200, f"{image.stem}:cat", 1), None,
                                           0.0, 0.0)

    monkeypatch.setattr(workload_module, "send_image", fake_send)
    gc.unfreeze()
    report = run_workload("http://127.0.0.1:9/", sorted(tmp_path.glob("*.jpg")), concurrency=2)
    assert [r.outcome for r in report.records] == [CORRECT, CORRECT]
    assert len(frozen_while_sending) == 2 and all(count > 0 for count in frozen_while_sending)
    assert gc.get_freeze_count() == 0
