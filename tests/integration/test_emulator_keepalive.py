"""The emulator's HTTP front end keeps connections open (werkzeug closed every one) and never mixes requests up."""
from __future__ import annotations

import http.client
import json
import os
import threading

import boto3
import botocore.config
import pytest

from hybrid.local.awsserver import server_fixes


@pytest.fixture
def served():
    """moto, served in this process as the emulator serves it; counts the TCP connections it accepts."""
    server_fixes.apply()
    server = server_fixes.serve("127.0.0.1", 0)
    accepted: list[object] = []
    real_process_request = server.process_request

    def counting(request, client_address):
        accepted.append(client_address)
        return real_process_request(request, client_address)

    server.process_request = counting
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", accepted
    server.shutdown()
    thread.join(timeout=5)


def client(url: str, service: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                        aws_secret_access_key="s", config=botocore.config.Config(retries={"max_attempts": 1}))


def test_one_client_makes_all_its_calls_on_one_connection(served) -> None:
    url, accepted = served
    s3 = client(url, "s3")
    s3.create_bucket(Bucket="keep-alive")
    bodies = {f"k{i}": os.urandom(20_000 + i) for i in range(20)}
    for key, body in bodies.items():
        s3.put_object(Bucket="keep-alive", Key=key, Body=body)
    assert {key: s3.get_object(Bucket="keep-alive", Key=key)["Body"].read() for key in bodies} == bodies
    assert len(accepted) == 1


def test_a_body_the_server_did_not_read_does_not_spill_into_the_next_request(served) -> None:
    url, accepted = served
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    smuggled = b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n" * 200  # looks like requests if left unread
    for method, path in [("GET", "/favicon.ico"), ("POST", "/moto-api/reset"), ("DELETE", "/no-such-bucket")]:
        connection.request(method, path, body=smuggled)
        connection.getresponse().read()
        connection.request("GET", "/moto-api/data.json")
        response = connection.getresponse()
        assert response.status == 200 and isinstance(json.loads(response.read()), dict), f"after {method} {path}"
    assert len(accepted) == 1


def test_sqs_calls_share_a_connection_too(served) -> None:
    url, accepted = served
    sqs = client(url, "sqs")
    queue = sqs.create_queue(QueueName="keep-alive")["QueueUrl"]
    for i in range(10):
        sqs.send_message(QueueUrl=queue, MessageBody=f"m{i}")
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == [f"m{i}" for i in range(10)]
    assert len(accepted) == 1


def test_a_chunked_request_still_gets_its_connection_closed(served) -> None:
    url, _ = served
    client(url, "s3").create_bucket(Bucket="chunked")
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    connection.request("PUT", "/chunked/k", body=iter([b"abc", b"def"]), encode_chunked=True,
                       headers={"Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    assert response.getheader("Connection") == "close"
