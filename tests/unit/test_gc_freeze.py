"""Long-lived servers freeze their startup heap out of the garbage collector: the web tier after building its app,
the local AWS server after loading its services."""
from __future__ import annotations

import gc
import weakref

import pytest

from hybrid.core.settings import Settings
from hybrid.local.awsserver import server_fixes


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freeze_heap_collects_the_garbage_then_freezes_what_lives(unfrozen):
    kept, dropped = Node(), Node()
    gone = weakref.ref(dropped)
    del dropped
    server_fixes.freeze_heap()
    assert gone() is None, "garbage is collected, not frozen"
    assert gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects(generation=2)), "the live object left the collector's reach"


def test_the_web_server_freezes_its_heap_once_the_app_is_built(unfrozen, monkeypatch):
    import web_tier.server
    from web_tier.server import WebServer

    built = []
    monkeypatch.setattr(web_tier.server, "create_app", lambda settings: built.append(gc.get_freeze_count()) or "app")
    assert WebServer(Settings()).load() == "app"
    assert built == [0] and gc.get_freeze_count() > 0, "frozen after the app was built, not before"
