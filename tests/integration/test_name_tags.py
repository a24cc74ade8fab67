"""Every resource of a stack carries a ``Name`` tag, on the local AWS server over HTTP; app-tier instances are named
``<stack>-app-tier-<n>`` (or by ``aws.instance_name_pattern``) with the lowest numbers no live instance has."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(240)


def _tag(tags, key="Name"):
    return {t["Key"]: t["Value"] for t in tags}.get(key)


def _names_of_live(ec2, filters):
    live = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    reservations = ec2.describe_instances(Filters=filters + live)["Reservations"]
    return sorted(_tag(i.get("Tags", [])) for r in reservations for i in r["Instances"])


def _fleet(rig):
    fleet = rig.aws.fleet
    fleet.spec = rig.aws.launch_spec(rig.settings.to_json())
    return fleet


def test_every_resource_of_the_stack_has_a_name(stack, raw_client):
    rig = stack(aws__instance_profile="yes")
    s3, sqs, ec2, iam = (raw_client(s) for s in ("s3", "sqs", "ec2", "iam"))
    stack_name = rig.settings.stack
    named = {}
    for bucket in (f"{stack_name}-input", f"{stack_name}-output"):
        named[bucket] = _tag(s3.get_bucket_tagging(Bucket=bucket)["TagSet"])
    for url in sqs.list_queues(QueueNamePrefix=stack_name)["QueueUrls"]:
        named[url.rsplit("/", 1)[1]] = sqs.list_queue_tags(QueueUrl=url)["Tags"].get("Name")
    by_stack = [{"Name": "tag:hybrid:stack", "Values": [stack_name]}]
    for group in ec2.describe_security_groups(Filters=by_stack)["SecurityGroups"]:
        named["group " + group["GroupName"]] = _tag(group["Tags"])
    pair = ec2.describe_key_pairs(KeyNames=[f"{stack_name}-key"])["KeyPairs"][0]
    named[pair["KeyName"]] = _tag(pair.get("Tags", []))
    for image in ec2.describe_images(Owners=["self"], Filters=by_stack)["Images"]:
        named["image " + image["Name"]] = _tag(image["Tags"])
    named[f"{stack_name}-worker"] = _tag(iam.list_role_tags(RoleName=f"{stack_name}-worker")["Tags"])
    named[f"{stack_name}-web-tier"] = _tag(iam.list_user_tags(UserName=f"{stack_name}-web-tier")["Tags"])

    assert len(named) == 11, named  # 2 buckets, 4 queues, group, key pair, image, worker role, web-tier user
    assert named == {key: key.split(" ")[-1] for key in named}


def test_instances_are_named_with_the_lowest_free_numbers(stack):
    rig = stack(worker__idle_timeout="600")  # workers that stay until `down`
    fleet = _fleet(rig)
    prefix = f"{rig.settings.stack}-app-tier-"
    by_stack = [{"Name": "tag:hybrid:stack", "Values": [rig.settings.stack]}]

    first = fleet.launch(3, "burst-1")
    assert _names_of_live(rig.ec2, by_stack) == [f"{prefix}1", f"{prefix}2", f"{prefix}3"]
    assert fleet.launch(3, "burst-1") == first, "the same token launches nothing more"

    fleet.terminate([first[1]])
    rig.wait_state(first[1], "terminated", 30)
    fleet.launch(2, "burst-2")
    assert _names_of_live(rig.ec2, by_stack) == [f"{prefix}{n}" for n in (1, 2, 3, 4)]


def test_the_course_pattern_is_what_its_grader_filters_on(stack):
    rig = stack(worker__idle_timeout="600", aws__instance_name_pattern="app-tier-instance-{n}")
    _fleet(rig).launch(2, "course")
    graded = [{"Name": "tag:Name", "Values": ["app-tier-instance*"]},
              {"Name": "tag:hybrid:stack", "Values": [rig.settings.stack]}]
    assert _names_of_live(rig.ec2, graded) == ["app-tier-instance-1", "app-tier-instance-2"]


def test_a_web_process_reply_queue_is_named_too(stack, raw_client):
    from hybrid.aws.session import AwsClients
    from hybrid.aws.storage import QueueDriver
    from web_tier.runtime import ensure_reply_queue

    rig = stack()
    name = f"{rig.settings.stack}-replies-host-1"
    queues = QueueDriver(AwsClients(rig.settings).sqs, rig.settings.stack)
    url = ensure_reply_queue(queues, name, rig.settings).id
    assert raw_client("sqs").list_queue_tags(QueueUrl=url)["Tags"]["Name"] == name
