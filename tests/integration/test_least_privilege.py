"""Least privilege, recorded: each role's process runs its real code paths against the local AWS server, every AWS
call it makes is recorded (a botocore event hook on the clients its ``AwsClients`` makes), and each role's policy, as
`hybrid aws up` put it in IAM, must allow every recorded request and grant nothing that went unused.

- worker (the instance profile's role): answers a web request, a batch object (whose bytes have no stored result
  yet: the look-up by content hash is a 404) and a request whose image is missing, gives a malformed message back,
  then, idle, terminates its own instance;
- web tier (managed policy ``<stack>-web-tier`` of the web-tier machine's user): `hybrid web`'s stack check, a process's
  start (a dead process's reply queue deleted, its own created), an upload classified end to end, /status, /readyz;
- autoscaler (managed policy ``<stack>-autoscaler`` of the same user): starts, launches on a backlog, terminates one
  over a lowered maximum.

The calls become IAM requests, with their condition context, in ``tests/iam_policy.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from typing import Any

import pytest

from hybrid.aws import session as aws_session
from hybrid.aws.identity import POLICY_NAME
from hybrid.core.messages import ClassifyRequest
from hybrid.core.naming import STACK_TAG
from tests.iam_policy import Account, Call, denied, requests_of, unused
from tests.integration.rig import photo_bytes

pytestmark = pytest.mark.timeout(240)

# Grants no recorded call can use here, each with why it must stay. (Empty: every grant is used by a recorded call.)
NOT_RECORDABLE: dict[str, set[tuple[str, str, str]]] = {"worker": set(), "web tier": set(), "autoscaler": set()}


class Recorder:
    """Every call made through clients that ``AwsClients`` creates while a role is current, by role."""

    def __init__(self) -> None:
        self.role = ""
        self.calls: dict[str, list[dict[str, Any]]] = {}

    def attach(self, raw: Any) -> None:
        role = self.role
        if not role:
            return
        raw.meta.events.register("before-parameter-build", lambda params, model, context, **_: self._before(
            role, params, model, context))
        raw.meta.events.register("after-call", lambda parsed, context, **_: self._after(parsed, context))

    def _before(self, role: str, params: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
        entry = {"service": model.service_model.service_name, "operation": model.name, "params": dict(params),
                 "error": ""}
        self.calls.setdefault(role, []).append(entry)
        context["recorded"] = entry

    def _after(self, parsed: dict[str, Any], context: dict[str, Any]) -> None:
        if "recorded" in context:
            context["recorded"]["error"] = str(parsed.get("Error", {}).get("Code", ""))

    def of(self, role: str) -> list[Call]:
        return [Call(c["service"], c["operation"], c["params"], c["error"]) for c in self.calls.get(role, [])]


@pytest.fixture
def recorder(monkeypatch):
    recorder = Recorder()
    original = aws_session.AwsClients.client

    def client(self, service):
        made = original(self, service)
        recorder.attach(made.raw)
        return made
    monkeypatch.setattr(aws_session.AwsClients, "client", client)
    return recorder


class OneLabel:
    """The classifier is not what is under test: every image is an espresso."""

    model_id = "fake-model@1"

    def classify(self, images):
        from tests.fakes import FakePrediction

        return [FakePrediction("espresso") for _ in images]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_every_role_uses_exactly_what_its_policy_grants(stack, recorder, raw_client, tmp_path):
    from app_tier.service import build_worker
    from hybrid.autoscale.service import build_autoscaler
    from hybrid.tools.batch import BatchClient
    from web_tier.app import create_app
    from web_tier.runtime import host_tag, require_stack_exists

    rig = stack(aws__instance_profile="yes", worker__idle_timeout="3", scaling__max_workers="2")
    settings, names = rig.settings, f"{rig.settings.stack}"
    batch = BatchClient(settings)
    batch.init()
    own = rig.ec2.run_instances(ImageId=_image_id(rig), MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                    {"Key": STACK_TAG, "Value": names}]}])["Instances"][0]["InstanceId"]
    stale = f"{names}-replies-{host_tag()}-{dead_pid()}"
    probe = f"{names}-replies-probe"  # where the answers to requests sent here go
    for queue in (stale, probe):
        rig.sqs.create_queue(QueueName=queue, tags={STACK_TAG: names, "hybrid:role": "responses"})

    recorder.role = "web tier"
    require_stack_exists(settings)
    app = create_app(settings)
    recorder.role = "worker"
    worker = build_worker(settings, own, OneLabel())
    recorder.role = ""
    image, batch_image = tmp_path / "coffee.jpg", tmp_path / "rocket.jpg"
    image.write_bytes(photo_bytes("coffee", (64, 48)))
    batch_image.write_bytes(photo_bytes("rocket", (64, 48)))  # other bytes than the web request's: never stored yet

    worker_thread = threading.Thread(target=worker.run, daemon=True)  # from here, idle for 3 s ends it
    worker_thread.start()
    rig.sqs.send_message(QueueUrl=rig.requests,
                         MessageBody=ClassifyRequest("gone", "sha256/missing", "gone", probe).to_body())
    rig.sqs.send_message(QueueUrl=rig.requests, MessageBody="not a request")  # made visible again at once
    batch.upload(batch_image)
    try:
        web = app.test_client()
        answer = web.post("/upload", data={"inputFile": (image.open("rb"), "coffee.jpg")})
        assert answer.status_code == 200 and answer.get_data(as_text=True) == "coffee:espresso"
        assert web.get("/status").status_code == 200
        assert web.get("/readyz").status_code == 200
    finally:
        app.extensions["hybrid"].close()

    worker_thread.join(timeout=60)
    assert not worker_thread.is_alive(), "the idle worker ended"
    assert rig.state(own) in ("shutting-down", "terminated"), "and terminated its own instance"
    assert worker.stats.answered >= 2

    recorder.role = "autoscaler"
    scaler = build_autoscaler(settings, None)
    recorder.role = ""
    for n in range(2):
        rig.sqs.send_message(QueueUrl=rig.requests, MessageBody=ClassifyRequest(f"b{n}", f"sha256/none{n}", "x", probe)
                             .to_body())
    assert scaler.tick().to_launch == 2
    scaler.scaling = replace(scaler.scaling, max_workers=1)
    assert len(scaler.tick().to_terminate) == 1

    iam, where = raw_client("iam"), _account(rig, raw_client)
    attached = {p["PolicyName"]: p["PolicyArn"]
                for p in iam.list_attached_user_policies(UserName=f"{names}-web-tier")["AttachedPolicies"]}
    policies = {"worker": _document(iam.get_role_policy(RoleName=f"{names}-worker", PolicyName=POLICY_NAME)),
                "web tier": _managed(iam, attached[f"{names}-web-tier"]),
                "autoscaler": _managed(iam, attached[f"{names}-autoscaler"])}
    report = {}
    for role, policy in policies.items():
        calls = recorder.of(role)
        role_where = replace(where, source_instance=own) if role == "worker" else where
        requests = [r for call in calls for r in requests_of(call, role_where)]
        report[role] = (len(calls), sorted({str(r) for r in requests}))
        assert denied(policy, requests) == [], f"{role}: calls its policy does not allow"
        assert set(unused(policy, requests)) == NOT_RECORDABLE[role], f"{role}: grants no call used"
    print(json.dumps(report, indent=1))


def _image_id(rig) -> str:
    return next(r["id"] for r in rig.aws.status() if r["kind"] == "image")


def _document(reply: dict[str, Any]) -> dict[str, Any]:
    document = reply["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def _managed(iam, arn: str) -> dict[str, Any]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return _document({"PolicyDocument": iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"][
        "Document"]})


def _account(rig, raw_client) -> Account:
    ec2 = raw_client("ec2")

    def tags_of(arn: str) -> dict[str, str]:
        kind, name = arn.rsplit(":", 1)[-1].split("/", 1)
        if kind == "instance" and name.startswith("i-") and name != "i-launched":
            found = [i for r in ec2.describe_instances(InstanceIds=[name])["Reservations"] for i in r["Instances"]]
        elif kind == "image":
            found = ec2.describe_images(ImageIds=[name])["Images"]
        elif kind == "security-group":
            found = ec2.describe_security_groups(GroupIds=[name])["SecurityGroups"]
        else:
            return {}
        return {t["Key"]: t["Value"] for item in found for t in item.get("Tags", [])}

    account = raw_client("sts").get_caller_identity()["Account"]
    return Account(rig.settings.aws.region, account, tags_of)
