"""The contracts every cloud adapter implements, stated once.

Adapters (boto3 against AWS or the local server, in-memory fakes in unit tests) implement these Protocols and say
little else. Every resource is found again by its stack's name and tags (``hybrid.core.naming``), never by local files,
so a second run resumes instead of duplicating, and a teardown after a half-finished setup still finds everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

ACTION_CREATE = "create"
ACTION_UPDATE = "update"
ACTION_KEEP = "keep"


@dataclass(frozen=True)
class Resource:
    """A resource the stack should have.

    ``properties`` are the settings to converge (compared as strings with what is observed). ``managed=False``
    marks a resource the stack only refers to (an AMI given by id): it must exist, and is never changed or deleted.
    ``inputs`` are what the driver needs to build it but cannot read back (a policy document whose digest is the
    compared property). ``hint``, for a resource the stack only refers to, tells the operator how to provide it when
    it does not exist, in its cloud's words (the stack engine's refusal adds it).
    """

    kind: str
    name: str
    role: str
    properties: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    managed: bool = True
    inputs: Mapping[str, str] = field(default_factory=dict)
    hint: str = ""


@dataclass(frozen=True)
class Observed:
    """A resource as the cloud reports it. ``owned``: it carries this stack's tags."""

    kind: str
    name: str
    id: str
    owned: bool
    properties: Mapping[str, str] = field(default_factory=dict)
    state: str = "present"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """One step of a plan: create, update (with the differences) or keep."""

    action: str
    resource: Resource
    differences: tuple[str, ...] = ()

    def describe(self) -> str:
        what = f"{self.resource.kind} {self.resource.name}"
        if self.action == ACTION_UPDATE:
            return f"update {what}: " + "; ".join(self.differences)
        return f"{self.action} {what}"


class ResourceDriver(Protocol):
    """Idempotent lifecycle of one kind of resource (bucket, queue, security group, ...)."""

    kind: str

    def observe(self, resource: Resource) -> Observed | None:
        """The resource of that name as it is now, or None if there is none."""

    def create(self, resource: Resource) -> Observed:
        """Creates it, tagged for its stack, with ``resource.properties`` in force."""

    def update(self, resource: Resource, observed: Observed) -> None:
        """Brings an owned resource's properties to ``resource.properties``."""

    def delete(self, observed: Observed) -> None:
        """Deletes it (emptying it first where needed). Already gone is fine."""


@dataclass(frozen=True)
class Instance:
    """An app-tier instance as the cloud reports it."""

    id: str
    state: str
    launched_at: float
    image_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


class Fleet(Protocol):
    """The app-tier instances of one stack, found by its ``hybrid:stack`` tag."""

    def instances(self) -> list[Instance]:
        """This stack's instances that are not yet terminated."""

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Asks for termination; ids already gone are fine."""

    def launch(self, count: int, token: str) -> list[str]:
        """Launches ``count`` app-tier instances in one call; the same ``token`` never launches twice."""


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int = 0


@dataclass(frozen=True)
class QueueMessage:
    """A received message: its body, the handle to delete or hide it, and how often it was received."""

    message_id: str
    receipt: str
    body: str
    receive_count: int = 1


class MessageQueue(Protocol):
    """One queue (SQS, or a fake). Sends take bodies; receives hide messages for ``visibility`` seconds."""

    name: str

    def send(self, bodies: Sequence[str]) -> None:
        """Sends the bodies (in batches of 10)."""

    def receive(self, max_messages: int, wait_seconds: int, visibility: int | None = None) -> list[QueueMessage]:
        """Long-polls up to ``wait_seconds`` for at most ``max_messages`` (<= 10)."""

    def delete(self, receipts: Sequence[str]) -> None:
        """Deletes received messages; an already deleted one is fine."""

    def hide(self, receipts: Sequence[str], seconds: int) -> None:
        """Sets the messages' visibility timeout to ``seconds`` from now (0 makes them visible again)."""

    def depth(self) -> QueueDepth:
        """Visible, in-flight and delayed message counts."""


class ObjectStore(Protocol):
    """One bucket (S3, or a fake)."""

    name: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Writes the object (overwrites: writes are idempotent by design)."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Writes the object unless the key exists (one conditional call); True if it wrote."""

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """Reads it; ``NotFoundError`` if absent, ``TooLargeError`` if larger than ``max_bytes``."""

    def exists(self, key: str) -> bool:
        """True if the key is there."""


class ImageClassifier(Protocol):
    """Classifies image bytes in one batch. A bad image comes back as the exception in its slot, not raised."""

    model_id: str

    def classify(self, images: Sequence[bytes]) -> list[Any]:
        """One ``Prediction`` (label, top5) or ``Exception`` per image, in order."""
