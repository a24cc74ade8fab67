"""Every resource name and tag of a stack, derived from the stack name in one place."""
from __future__ import annotations

from dataclasses import dataclass

STACK_TAG = "hybrid:stack"
ROLE_TAG = "hybrid:role"
NAME_TAG = "Name"
DEFAULT_INSTANCE_NAME_PATTERN = "{stack}-app-tier-{n}"

ROLE_INPUT = "input"
ROLE_OUTPUT = "output"
ROLE_REQUESTS = "requests"
ROLE_RESPONSES = "responses"
ROLE_DEAD_LETTERS = "dead-letters"
ROLE_APP_TIER = "app-tier"
ROLE_WEB_TIER = "web-tier"
ROLE_EXPORTS = "exports"
# Machine images: the digest of a bake's recipe and checkout (the image cache's key, on AWS and on the local server)
RECIPE_DIGEST_TAG = "hybrid:recipe-digest"
# On the local AWS server, an app-tier instance with this tag (value LOCAL_MACHINE_VM) boots its image as a VM
# instead of running as a local worker process; bake builders always boot as VMs.
LOCAL_MACHINE_TAG = "hybrid:local-machine"
LOCAL_MACHINE_VM = "vm"
IMAGE_LOGIN_USER = "debian"
"""The login user of the images (Debian's cloud images and the local fixture's base): SSH steps log in as it."""


@dataclass(frozen=True)
class StackNames:
    """Names of one stack's resources. Buckets carry the stack name, so it must be unique enough for S3."""

    stack: str
    ami_name_override: str = ""
    instance_name_pattern: str = ""

    @property
    def input_bucket(self) -> str:
        return f"{self.stack}-input"

    @property
    def output_bucket(self) -> str:
        return f"{self.stack}-output"

    @property
    def exports_bucket(self) -> str:
        """Where ``hybrid image export`` writes AMI exports (made by that command, deleted by ``aws down``)."""
        return f"{self.stack}-exports"

    @property
    def request_queue(self) -> str:
        return f"{self.stack}-requests"

    @property
    def response_queue(self) -> str:
        return f"{self.stack}-responses"

    def reply_queue(self, owner: str) -> str:
        """A web-tier process's own response queue: ``<stack>-replies-<owner>`` (owner = host-pid)."""
        return f"{self.reply_queue_prefix}{owner}"

    @property
    def reply_queue_prefix(self) -> str:
        return f"{self.stack}-replies-"

    def dead_letter_queue(self, queue: str) -> str:
        return f"{queue}-dlq"

    @property
    def app_security_group(self) -> str:
        return f"{self.stack}-app-tier"

    @property
    def key_pair(self) -> str:
        return f"{self.stack}-key"

    @property
    def app_image(self) -> str:
        return self.ami_name_override or f"{self.stack}-app-tier"

    @property
    def worker_role(self) -> str:
        return f"{self.stack}-worker"

    @property
    def instance_profile(self) -> str:
        return f"{self.stack}-worker"

    @property
    def web_tier_user(self) -> str:
        """The IAM user whose access key the web-tier machine holds (its web tier and its autoscaler)."""
        return f"{self.stack}-web-tier"

    def instance_name(self, n: int) -> str:
        """The ``Name`` tag of app-tier instance number ``n`` (1, 2, ...): the pattern's ``{stack}`` and ``{n}``
        filled in; ``<stack>-app-tier-<n>`` by default (the course's grader wants ``app-tier-instance-{n}``)."""
        return (self.instance_name_pattern or DEFAULT_INSTANCE_NAME_PATTERN).format(stack=self.stack, n=n)

    def tags(self, role: str, name: str = "") -> dict[str, str]:
        """The tags every resource of this stack carries; they, not local files, say what belongs to the stack.
        With ``name``, also ``Name`` (what the EC2 console and ``tag:Name`` filters show); it is a label, never
        what a resource is found by."""
        return {STACK_TAG: self.stack, ROLE_TAG: role, **({NAME_TAG: name} if name else {})}
