"""State-holding fakes behind the project's own contracts (``hybrid.contracts``), for unit tests."""
from __future__ import annotations

from typing import Sequence

from hybrid.contracts import Instance, Observed, Resource
from hybrid.errors import CloudError
from hybrid.naming import STACK_TAG


class InMemoryDriver:
    """Holds resources of one kind in a dict, as a cloud would; can be told to fail a given create."""

    def __init__(self, kind: str, fail_on_create: str = "") -> None:
        self.kind = kind
        self.items: dict[str, Observed] = {}
        self.fail_on_create = fail_on_create
        self.calls: list[tuple[str, str]] = []

    def put_foreign(self, name: str) -> None:
        """A resource of that name that belongs to someone else (no stack tag)."""
        self.items[name] = Observed(self.kind, name, f"foreign-{name}", owned=False)

    def observe(self, resource: Resource) -> Observed | None:
        return self.items.get(resource.name)

    def create(self, resource: Resource) -> Observed:
        self.calls.append(("create", resource.name))
        if resource.name == self.fail_on_create:
            raise CloudError(f"injected failure creating {resource.name}")
        observed = Observed(self.kind, resource.name, f"id-{resource.name}",
                            owned=resource.tags.get(STACK_TAG) is not None, properties=dict(resource.properties))
        self.items[resource.name] = observed
        return observed

    def update(self, resource: Resource, observed: Observed) -> None:
        self.calls.append(("update", resource.name))
        self.items[resource.name] = Observed(self.kind, resource.name, observed.id, True, dict(resource.properties))

    def delete(self, observed: Observed) -> bool:
        self.calls.append(("delete", observed.name))
        return self.items.pop(observed.name, None) is not None


class FakeFleet:
    """Instances that take ``polls_to_terminate`` looks before they leave the live list after termination."""

    def __init__(self, polls_to_terminate: int = 2) -> None:
        self.live: dict[str, Instance] = {}
        self.countdown: dict[str, int] = {}
        self.polls_to_terminate = polls_to_terminate
        self.terminate_calls: list[list[str]] = []

    def add(self, instance_id: str, state: str = "running") -> None:
        self.live[instance_id] = Instance(instance_id, state, launched_at=0.0)

    def instances(self) -> list[Instance]:
        for instance_id in list(self.countdown):
            self.countdown[instance_id] -= 1
            if self.countdown[instance_id] <= 0:
                del self.countdown[instance_id]
                self.live.pop(instance_id, None)
        return list(self.live.values())

    def terminate(self, instance_ids: Sequence[str]) -> None:
        self.terminate_calls.append(list(instance_ids))
        for instance_id in instance_ids:
            if instance_id in self.live and instance_id not in self.countdown:
                self.live[instance_id] = Instance(instance_id, "shutting-down", 0.0)
                self.countdown[instance_id] = self.polls_to_terminate
