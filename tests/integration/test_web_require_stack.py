"""`hybrid web`'s check before serving, from the settings alone, on the local server."""
from __future__ import annotations

import pytest

from hybrid.core.errors import NotFoundError
from web_tier.runtime import require_stack_exists


def test_a_stack_without_its_request_queue_is_not_set_up(settings_for, stack_name):
    with pytest.raises(NotFoundError, match=f"stack {stack_name} is not set up \\(no queue {stack_name}-requests\\)"):
        require_stack_exists(settings_for(stack_name))


def test_a_set_up_stack_passes(stack):
    require_stack_exists(stack().settings)
