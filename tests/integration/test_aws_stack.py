"""The AWS stack against the local server over HTTP: the project's boto3 code path, end to end."""
from __future__ import annotations

import json
import stat

import pytest

from hybrid.aws.stack import build_aws_stack
from hybrid.core.errors import CredentialsError, EmulatorNotRunning, NameTakenError, RegionError
from hybrid.core.settings import load

quiet = dict(report=lambda line: None)


def stack_resource_names(raw_client, stack):
    """Everything on the server that carries the stack's name or tag: what must be gone after `down`."""
    s3, sqs, ec2, iam = (raw_client(s) for s in ("s3", "sqs", "ec2", "iam"))
    found = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(stack)]
    found += sqs.list_queues(QueueNamePrefix=stack).get("QueueUrls", [])
    tag_filter = [{"Name": "tag:hybrid:stack", "Values": [stack]}]
    found += [g["GroupId"] for g in ec2.describe_security_groups(Filters=tag_filter)["SecurityGroups"]]
    found += [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith(stack)]
    found += [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=tag_filter)["Images"]]
    found += [i["InstanceId"] for r in ec2.describe_instances(Filters=tag_filter + [
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
        for i in r["Instances"]]
    found += [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(stack)]
    found += [u["UserName"] for u in iam.list_users()["Users"] if u["UserName"].startswith(stack)]
    found += [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]
              if p["PolicyName"].startswith(stack)]
    return found


def launch(ec2, image_id, tags, user_data="{}"):
    """An instance; an app-tier one becomes a local worker (the emulator's instance runner), which keeps running
    as long as its settings (``user_data``) let it idle."""
    tag_spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro", UserData=user_data,
                             TagSpecifications=tag_spec)["Instances"][0]["InstanceId"]


def test_up_twice_then_down_leaves_nothing_and_spares_foreign_resources(settings_for, stack_name, raw_client):
    s3, sqs, ec2 = raw_client("s3"), raw_client("sqs"), raw_client("ec2")
    foreign_bucket, foreign_queue = f"{stack_name}x-foreign", f"{stack_name}x-foreign"
    s3.create_bucket(Bucket=foreign_bucket)
    foreign_queue_url = sqs.create_queue(QueueName=foreign_queue)["QueueUrl"]
    stack = build_aws_stack(settings_for(stack_name, aws__instance_profile="yes"))

    assert len(stack.up(**quiet)) == len(stack.desired)
    assert stack.up(**quiet) == []
    assert [c for c in stack.plan() if c.action != "keep"] == []

    image_id = next(r["id"] for r in stack.status() if r["kind"] == "image")
    patient = settings_for(stack_name, worker__idle_timeout="600").to_json()  # workers that wait for `down`
    ours = [launch(ec2, image_id, {"hybrid:stack": stack_name, "hybrid:role": "app-tier"}, patient)
            for _ in range(2)]
    foreign_instance = launch(ec2, image_id, {"hybrid:stack": "someone-else", "hybrid:role": "web-tier"})

    lines = stack.down(**quiet)
    assert lines[0] == "instances: 2 terminated"
    assert stack_resource_names(raw_client, stack_name) == [foreign_bucket, foreign_queue_url]
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances(
        InstanceIds=ours + [foreign_instance])["Reservations"] for i in r["Instances"]}
    assert states == {ours[0]: "terminated", ours[1]: "terminated", foreign_instance: "running"}
    assert s3.head_bucket(Bucket=foreign_bucket)
    assert stack.down(**quiet)[1:] == [f"{r.kind} {r.name}: already absent" for r in reversed(stack.desired)]
    ec2.terminate_instances(InstanceIds=[foreign_instance])


def test_resources_are_private_small_and_redriven(settings_for, stack_name, raw_client, state_dir):
    settings = settings_for(stack_name, aws__operator_cidr="203.0.113.7/32")
    stack = build_aws_stack(settings)
    stack.up(**quiet)
    s3, sqs, ec2 = raw_client("s3"), raw_client("sqs"), raw_client("ec2")
    try:
        for bucket in (f"{stack_name}-input", f"{stack_name}-output"):
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            assert all(block.values()) and len(block) == 4
            rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
            assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        url = sqs.get_queue_url(QueueName=f"{stack_name}-requests")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["MaximumMessageSize"] == "8192"
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["maxReceiveCount"] == 3 and redrive["deadLetterTargetArn"].endswith(f"{stack_name}-requests-dlq")
        tags = sqs.list_queue_tags(QueueUrl=url)["Tags"]
        assert tags == {"hybrid:stack": stack_name, "hybrid:role": "requests", "Name": f"{stack_name}-requests"}
        [group] = ec2.describe_security_groups(GroupNames=[f"{stack_name}-app-tier"])["SecurityGroups"]
        assert [(p["IpProtocol"], p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]])
                for p in group["IpPermissions"]] == [("tcp", 22, ["203.0.113.7/32"])]
        key = state_dir / "keys" / f"{stack_name}-key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text().startswith("-----BEGIN")
    finally:
        stack.down(**quiet)
    assert not (state_dir / "keys" / f"{stack_name}-key.pem").exists()


def test_drift_is_planned_and_converged(settings_for, stack_name, raw_client):
    stack = build_aws_stack(settings_for(stack_name))
    stack.up(**quiet)
    sqs, ec2 = raw_client("sqs"), raw_client("ec2")
    try:
        url = sqs.get_queue_url(QueueName=f"{stack_name}-requests")["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "262144"})
        [group] = ec2.describe_security_groups(GroupNames=[f"{stack_name}-app-tier"])["SecurityGroups"]
        ec2.authorize_security_group_ingress(GroupId=group["GroupId"], IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        planned = sorted(c.describe() for c in stack.plan() if c.action != "keep")
        assert planned == [f"update queue {stack_name}-requests: MaximumMessageSize: 262144 -> 8192",
                           f"update security_group {stack_name}-app-tier: ingress: tcp/80 from 0.0.0.0/0 -> none"]
        stack.up(**quiet)
        assert [c for c in stack.plan() if c.action != "keep"] == []
    finally:
        stack.down(**quiet)


def test_down_after_a_half_finished_up(settings_for, stack_name, raw_client):
    stack = build_aws_stack(settings_for(stack_name))
    original = stack.drivers["security_group"].create

    def broken(resource):
        raise RuntimeError("network dropped mid-setup")
    stack.drivers["security_group"].create = broken
    with pytest.raises(RuntimeError):
        stack.up(**quiet)
    assert stack_resource_names(raw_client, stack_name), "the first resources were created"
    stack.drivers["security_group"].create = original
    stack.down(**quiet)
    assert stack_resource_names(raw_client, stack_name) == []


def test_a_taken_name_stops_up_and_survives_down(settings_for, stack_name, raw_client):
    s3 = raw_client("s3")
    s3.create_bucket(Bucket=f"{stack_name}-input")
    stack = build_aws_stack(settings_for(stack_name))
    with pytest.raises(NameTakenError, match=f"bucket {stack_name}-input exists but is not tagged"):
        stack.up(**quiet)
    assert "left alone" in " ".join(stack.down(**quiet))
    assert s3.head_bucket(Bucket=f"{stack_name}-input")
    s3.delete_bucket(Bucket=f"{stack_name}-input")


def test_down_empties_buckets_first(settings_for, stack_name, raw_client):
    stack = build_aws_stack(settings_for(stack_name))
    stack.up(**quiet)
    s3 = raw_client("s3")
    for i in range(1005):
        s3.put_object(Bucket=f"{stack_name}-output", Key=f"label-{i}", Body=b"tabby")
    stack.down(**quiet)
    assert stack_resource_names(raw_client, stack_name) == []


def test_down_deletes_the_ami_export_bucket_with_its_exports(settings_for, stack_name, raw_client):
    from hybrid.machine_images.export import ensure_export_bucket

    settings = settings_for(stack_name)
    stack = build_aws_stack(settings)
    stack.up(**quiet)
    s3 = raw_client("s3")
    bucket = ensure_export_bucket(stack.drivers["bucket"].s3, settings)
    s3.put_object(Bucket=bucket, Key="exports/export-ami-1.vmdk", Body=b"disk")
    lines = stack.down(**quiet)
    assert f"bucket {bucket}: deleted" in lines
    assert stack_resource_names(raw_client, stack_name) == []
    assert f"bucket {bucket}" not in " ".join(stack.down(**quiet))  # absent: not mentioned


def test_down_leaves_an_export_bucket_of_that_name_without_the_stacks_tags(settings_for, stack_name, raw_client):
    s3 = raw_client("s3")
    s3.create_bucket(Bucket=f"{stack_name}-exports")
    stack = build_aws_stack(settings_for(stack_name))
    stack.up(**quiet)
    lines = stack.down(**quiet)
    assert f"bucket {stack_name}-exports: left alone (not tagged for stack {stack_name})" in lines
    assert stack_resource_names(raw_client, stack_name) == [f"{stack_name}-exports"]
    s3.delete_bucket(Bucket=f"{stack_name}-exports")


def test_instance_profile_policy_is_scoped_to_the_stack(settings_for, stack_name, raw_client):
    stack = build_aws_stack(settings_for(stack_name, aws__instance_profile="yes"))
    stack.up(**quiet)
    iam = raw_client("iam")
    try:
        document = iam.get_role_policy(RoleName=f"{stack_name}-worker", PolicyName="hybrid-worker")["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        resources = [r for s in document["Statement"] for r in (s["Resource"] if isinstance(s["Resource"], list)
                                                                 else [s["Resource"]])]
        assert all(stack_name in r for r in resources if not r.endswith(":instance/*")), "instances: by condition"
        [terminate] = [s for s in document["Statement"] if s["Action"] == ["ec2:TerminateInstances"]]
        assert terminate["Condition"] == {
            "ArnEquals": {"ec2:SourceInstanceARN": "arn:aws:ec2:us-east-1:123456789012:instance/${ec2:InstanceID}"},
            "StringEquals": {"aws:ResourceTag/hybrid:stack": stack_name}}
        profile = iam.get_instance_profile(InstanceProfileName=f"{stack_name}-worker")["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == [f"{stack_name}-worker"]
    finally:
        stack.down(**quiet)
    assert iam.list_instance_profiles()["InstanceProfiles"] == [] or all(
        p["InstanceProfileName"] != f"{stack_name}-worker" for p in iam.list_instance_profiles()["InstanceProfiles"])


def test_the_web_tier_user_holds_two_managed_policies_converged_in_place_and_goes_with_its_keys(
        settings_for, stack_name, raw_client):
    iam, user = raw_client("iam"), f"{stack_name}-web-tier"
    stack = build_aws_stack(settings_for(stack_name, aws__instance_profile="yes"))
    stack.up(**quiet)
    try:
        attached = {p["PolicyName"]: p["PolicyArn"]
                    for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]}
        assert set(attached) == {f"{stack_name}-web-tier", f"{stack_name}-autoscaler"}
        assert {t["Key"]: t["Value"] for t in iam.list_user_tags(UserName=user)["Tags"]} == {
            "hybrid:stack": stack_name, "hybrid:role": "web-tier", "Name": user}
        assert stack.up(**quiet) == [], "a second up changes nothing"
        bigger = build_aws_stack(settings_for(stack_name, aws__instance_profile="yes", aws__instance_type="t3.small"))
        assert [(c.resource.kind, c.action) for c in bigger.up(**quiet)] == [("iam_user", "update")]
        versions = iam.list_policy_versions(PolicyArn=attached[f"{stack_name}-autoscaler"])["Versions"]
        assert len(versions) == 2 and bigger.up(**quiet) == []
        iam.create_access_key(UserName=user)  # what the operator makes for the machine
        iam.detach_user_policy(UserName=user, PolicyArn=attached[f"{stack_name}-web-tier"])  # as if up had stopped
    finally:
        lines = stack.down(**quiet)
    assert f"iam_user {user}: deleted" in lines
    assert stack_resource_names(raw_client, stack_name) == []


def test_status_reports_depths_and_instances(settings_for, stack_name, raw_client):
    stack = build_aws_stack(settings_for(stack_name))
    stack.up(**quiet)
    sqs = raw_client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=f"{stack_name}-requests")["QueueUrl"]
        for i in range(3):
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"id": i}))
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)
        rows = {r["name"]: r for r in stack.status()}
        assert rows[f"{stack_name}-requests"]["detail"] == "2 visible, 1 in flight"
        assert rows["app-tier"]["state"] == "0 live"
        assert all(r["state"] in ("ok", "available", "0 live") for r in rows.values())
    finally:
        stack.down(**quiet)


def test_emulator_not_running_is_a_clear_error(tmp_path, stack_name):
    settings = load(None, {}, {"stack": stack_name, "state_dir": str(tmp_path)})
    with pytest.raises(EmulatorNotRunning, match="hybrid emulator start"):
        build_aws_stack(settings).plan()


def test_missing_credentials_are_a_clear_error(tmp_path, stack_name, monkeypatch):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    settings = load(None, {}, {"stack": stack_name, "state_dir": str(tmp_path), "aws.target": "aws",
                               "aws.instance_profile": "no", "aws.endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        build_aws_stack(settings).plan()


def test_a_wrong_region_is_a_clear_error(tmp_path, stack_name):
    settings = load(None, {}, {"stack": stack_name, "state_dir": str(tmp_path), "aws.target": "aws",
                               "aws.region": "us-nowhere-1", "aws.instance_profile": "no"})
    with pytest.raises(RegionError, match="us-nowhere-1"):
        build_aws_stack(settings).plan()
