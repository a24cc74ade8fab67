"""The emulator's fix to moto's request dispatch: one backend lookup per host name, same answers as moto's own."""
from __future__ import annotations

import pytest

from hybrid.local.awsserver import server_fixes


def test_a_host_is_looked_up_once_and_a_miss_is_not_remembered() -> None:
    calls: list[str | None] = []

    def lookup(_self: object, host: str | None) -> str | None:
        calls.append(host)
        return {"s3.us-east-1.amazonaws.com": "s3"}.get(host or "")

    remembered = server_fixes.remembered_per_host(lookup)
    assert [remembered(None, "s3.us-east-1.amazonaws.com") for _ in range(3)] == ["s3"] * 3
    assert remembered(None, "nowhere.example") is None
    assert remembered(None, "nowhere.example") is None
    assert calls == ["s3.us-east-1.amazonaws.com", "nowhere.example", "nowhere.example"]


@pytest.mark.parametrize("host, backend", [
    ("s3.us-east-1.amazonaws.com", "s3"), ("sqs.us-east-1.amazonaws.com", "sqs"),
    ("ec2.eu-west-1.amazonaws.com", "ec2"), ("iam.amazonaws.com", "iam"), ("sqs", "sqs"),
])
def test_the_patched_dispatcher_finds_the_same_backends_without_listing_moto_again(
        host: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    server_fixes.apply()
    dispatcher = DomainDispatcherApplication(create_app=lambda name: None)
    original = DomainDispatcherApplication.get_backend_for_host.__wrapped__
    assert original(dispatcher, host) == backend
    assert dispatcher.get_backend_for_host(host) == backend
    listings: list[int] = []
    real_listing = backends.list_of_moto_modules
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: listings.append(1) or real_listing())
    assert [dispatcher.get_backend_for_host(host) for _ in range(5)] == [backend] * 5
    assert listings == []


def test_it_refuses_another_moto_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto

    monkeypatch.setattr(moto, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match="pinned"):
        server_fixes.apply()


@pytest.mark.parametrize("service, target", [("sqs", None), ("ec2", None), ("sts", None),
                                             ("sqs", "AmazonSQS.ReceiveMessage")])
def test_a_preloaded_service_answers_its_first_request_without_building_another_app(
        service: str, target: str | None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    built: list[str] = []
    dispatcher = DomainDispatcherApplication(create_app=lambda name: built.append(name) or f"app of {name}")
    server_fixes.preload_services(dispatcher, ["ec2", "s3", "sqs", "iam", "sts"])
    server_fixes.preload_services(dispatcher, ["ec2"])  # already there: not built again
    assert built == ["ec2", "s3", "sqs", "iam", "sts"]
    environ = {"PATH_INFO": "/", "HTTP_HOST": "127.0.0.1:4566", "REQUEST_METHOD": "POST",
               "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=emulator/20261202/us-east-1/"
                                     f"{service}/aws4_request, SignedHeaders=host, Signature=0"}
    if target:
        environ["HTTP_X_AMZ_TARGET"] = target
    assert dispatcher.get_application(environ) == f"app of {service}"
    assert len(built) == 5


def test_name_conversion_is_remembered_and_converts_as_moto_does() -> None:
    import moto.core.responses
    import moto.core.utils
    import moto.sqs.models

    server_fixes.apply()
    converted = moto.sqs.models.camelcase_to_underscores
    original = converted.__wrapped__
    names = ["ApproximateNumberOfMessagesNotVisible", "VisibilityTimeout", "ContentBasedDeduplication",
             "KmsMasterKeyId", "SendMessageBatch", "FifoQueue", "DBInstanceIdentifier", "", "a"]
    assert [converted(n) for n in names] == [original(n) for n in names]
    assert converted("VisibilityTimeout") == "visibility_timeout"
    hits = converted.cache_info().hits
    converted("VisibilityTimeout")
    assert converted.cache_info().hits == hits + 1
    assert moto.core.responses.camelcase_to_underscores is converted is moto.core.utils.camelcase_to_underscores
    server_fixes.memoise_name_conversion()  # again: still one cache, not a cache of a cache
    assert moto.sqs.models.camelcase_to_underscores.__wrapped__ is original


def test_method_names_are_listed_once_per_class_and_match_moto_s_list() -> None:
    import moto.core.responses
    from moto.ec2.responses import EC2Response
    from moto.sqs.responses import SQSResponse

    server_fixes.apply()
    listed = moto.core.responses.method_names_from_class
    original = listed.__wrapped__
    assert listed(EC2Response) == original(EC2Response) and "describe_instances" in listed(EC2Response)
    assert listed(SQSResponse) == original(SQSResponse) and "receive_message" in listed(SQSResponse)
    hits = listed.cache_info().hits
    listed(EC2Response)
    assert listed.cache_info().hits == hits + 1
    server_fixes.memoise_method_names()  # again: still one cache, not a cache of a cache
    assert moto.core.responses.method_names_from_class.__wrapped__ is original
