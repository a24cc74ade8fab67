"""Wires a worker from settings: the stack's queues and buckets, the classifier, and its way to terminate."""
from __future__ import annotations

import logging
from functools import lru_cache

from app_tier.classifier import load_classifier
from app_tier.termination import (
    SelfTerminator,
    instance_id_from_cloud_init,
    instance_id_from_metadata,
    no_instance,
    shutdown_now,
)
from app_tier.worker import Worker, WorkerConfig
from hybrid.aws.channels import S3Store, SqsQueue
from hybrid.aws.compute import Ec2Fleet
from hybrid.aws.session import AwsClients
from hybrid.aws.stack import stack_names
from hybrid.core import logs
from hybrid.core.contracts import ImageClassifier
from hybrid.core.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings, instance_id: str, classifier: ImageClassifier | None = None) -> str:
    """Works until idle (then terminates the instance) or stopped; returns why it ended. Loads the classifier
    unless given one (a forked local worker inherits its runner's). Its log lines take ``log.format``."""
    logs.use_format(settings.log.format)
    classifier = classifier or load_classifier(settings.worker.runtime, settings.worker.threads)
    instance_id = own_instance_id(instance_id, runs_on_aws(settings))
    worker = build_worker(settings, instance_id, classifier)
    name = instance_id or "(no instance)"
    log.info("worker %s: model %s on %s, stack %s", name, classifier.model_id, classifier.runtime, settings.stack)
    reason = worker.run()
    log.info("worker %s stopped (%s): %s", name, reason, worker.stats)
    return reason


def build_worker(settings: Settings, instance_id: str, classifier: ImageClassifier) -> Worker:
    clients, names = AwsClients(settings), stack_names(settings)

    @lru_cache(maxsize=64)
    def replies_to(queue_name: str) -> SqsQueue:
        return SqsQueue(clients.sqs, queue_name)

    return Worker(WorkerConfig.from_settings(settings), SqsQueue(clients.sqs, names.request_queue), replies_to,
                  S3Store(clients.s3, names.input_bucket), S3Store(clients.s3, names.output_bucket), classifier,
                  terminator(settings, clients, instance_id))


def terminator(settings: Settings, clients: AwsClients, instance_id: str):
    """How this worker ends its instance: through the API, with an OS shutdown as the fallback on AWS."""
    on_aws = runs_on_aws(settings)
    instance_id = own_instance_id(instance_id, on_aws)
    if not instance_id:
        return no_instance
    fleet = Ec2Fleet(clients.ec2, settings.stack)
    return SelfTerminator(fleet.terminate, instance_id, shutdown_now if on_aws else None)


def runs_on_aws(settings: Settings) -> bool:
    """True on an EC2 instance of a real AWS stack: only there is the instance metadata service asked."""
    return settings.aws.target == "aws" and settings.aws.use_instance_metadata


def own_instance_id(given: str, on_aws: bool, read_cloud_init=instance_id_from_cloud_init,
                    read_metadata=instance_id_from_metadata) -> str:
    """The given id, else cloud-init's for this machine, else (on AWS only) the metadata service's; "" if none."""
    if given:
        return given
    recorded = read_cloud_init()
    if recorded or not on_aws:
        return recorded
    return read_metadata()
