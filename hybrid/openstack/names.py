"""Names and ownership markers of a stack's OpenStack resources, derived from the stack name in one place.

OpenStack resources carry the stack in different places: server metadata, a security group's or floating IP's
description, an image's tag and property (Glance wants ``hybrid_stack``), and, since Nova key pairs have no tags,
the comment of the key pair's public key. ``marker`` is the one string that says "this stack's".
"""
from __future__ import annotations

from dataclasses import dataclass

from hybrid.core.naming import ROLE_TAG, ROLE_WEB_TIER, STACK_TAG

IMAGE_STACK_KEY = "hybrid_stack"
IMAGE_ORIGIN_KEY = "hybrid_origin"
ORIGIN_UPLOADED = "uploaded"


@dataclass(frozen=True)
class OpenStackNames:
    stack: str
    image_name_override: str = ""

    @property
    def image(self) -> str:
        return self.image_name_override or f"{self.stack}-{ROLE_WEB_TIER}"

    @property
    def key_pair(self) -> str:
        return f"{self.stack}-openstack"

    @property
    def security_group(self) -> str:
        return f"{self.stack}-{ROLE_WEB_TIER}"

    @property
    def server(self) -> str:
        return f"{self.stack}-{ROLE_WEB_TIER}"

    @property
    def floating_ip(self) -> str:
        return f"{self.stack}-{ROLE_WEB_TIER}"

    @property
    def marker(self) -> str:
        return stack_marker(self.stack)

    @property
    def image_tag(self) -> str:
        return f"{IMAGE_STACK_KEY}={self.stack}"

    def tags(self, role: str = ROLE_WEB_TIER) -> dict[str, str]:
        return {STACK_TAG: self.stack, ROLE_TAG: role}

    def description(self, role: str = ROLE_WEB_TIER) -> str:
        """What goes into a description field: ``hybrid:stack=<stack> hybrid:role=<role>``."""
        return " ".join(f"{key}={value}" for key, value in self.tags(role).items())


def stack_marker(stack: str) -> str:
    return f"{STACK_TAG}={stack}"


def carries_marker(text: str | None, stack: str) -> bool:
    """True if a description or key comment names this stack (as a whole word, so ``shop`` is not ``shop-2``)."""
    return stack_marker(stack) in (text or "").split()
