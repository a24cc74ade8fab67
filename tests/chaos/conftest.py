"""The chaos suite: faults done on purpose to the running service (slow clients, near-limit images, killed workers
and web processes, a restarted local AWS server, poison messages, damaged caches), each a test with its figure.
Bounded in count and time. It uses the integration fixtures (one local AWS server per session)."""
from __future__ import annotations

from tests.integration.conftest import *  # noqa: F401,F403 - the same fixtures as the integration tests
