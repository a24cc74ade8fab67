"""The stack engine both clouds share, against the in-memory drivers of tests.fakes (no cloud words in it)."""
import pytest

from hybrid.core.clock import FakeClock
from hybrid.core.contracts import ACTION_CREATE, ACTION_KEEP, ACTION_UPDATE, Observed, Resource
from hybrid.core.errors import CloudError, NameTakenError, NotFoundError
from hybrid.core.stack_engine import STATE_MISSING, STATE_TAKEN, StackEngine, anything_missing, plan
from tests.fakes import InMemoryDriver

TAGS = {"hybrid:stack": "unit"}


def quiet(line):
    return None


def resource(name="r", kind="queue", **properties):
    return Resource(kind, name, "requests", properties, TAGS)


def engine(desired, drivers, **words):
    return StackEngine(desired, drivers, FakeClock(), "busy", 30.0, **words)


def queues_engine(*names, fail_on_create="", **words):
    return engine([resource(name) for name in names], {"queue": InMemoryDriver("queue", fail_on_create)}, **words)


class Duplicates(InMemoryDriver):
    """A cloud that allows several resources of one name (as Nova and Neutron do): a stack of them per name."""

    def __init__(self, kind, *owned):
        super().__init__(kind)
        self.stacked = [Observed(kind, "r", f"id-{i}", is_ours) for i, is_ours in enumerate(owned)]

    def observe(self, wanted):
        return self.stacked[-1] if self.stacked else None

    def delete(self, observed):
        self.stacked.remove(observed)
        return True


class Busy(InMemoryDriver):
    """Deleting answers ``busy`` ``times`` times (a dependency still going away), then works."""

    def __init__(self, kind, times):
        super().__init__(kind)
        self.times = times

    def delete(self, observed):
        if self.times:
            self.times -= 1
            raise CloudError("still in use", code="busy")
        return super().delete(observed)


def test_plan_creates_what_is_missing_and_keeps_what_matches():
    wanted = [resource("a", size="1024"), resource("b", size="1024")]
    observed = {("queue", "a"): None, ("queue", "b"): Observed("queue", "b", "id-b", True, {"size": "1024"})}
    assert [c.action for c in plan(wanted, observed)] == [ACTION_CREATE, ACTION_KEEP]


def test_plan_reports_each_difference_as_an_update():
    observed = {("queue", "a"): Observed("queue", "a", "id", True, {"size": "262144", "timeout": "30"})}
    [change] = plan([resource("a", size="1024", timeout="30")], observed)
    assert change.action == ACTION_UPDATE
    assert change.differences == ("size: 262144 -> 1024",)
    assert "update queue a: size: 262144 -> 1024" == change.describe()


def test_plan_refuses_a_name_owned_by_someone_else():
    observed = {("queue", "a"): Observed("queue", "a", "id", owned=False)}
    with pytest.raises(NameTakenError, match="queue a exists but is not tagged for this stack"):
        plan([resource("a")], observed)


def test_plan_requires_a_referenced_resource_to_exist_and_passes_on_its_clouds_hint():
    image = Resource("image", "given", "app-tier", {"image_id": "img-123"}, managed=False,
                     hint="make one with `hybrid make-image`")
    with pytest.raises(NotFoundError, match="image given does not exist: make one with `hybrid make-image`$"):
        plan([image], {("image", "given"): None})
    found = Observed("image", "given", "img-123", owned=False)
    assert plan([image], {("image", "given"): found})[0].action == ACTION_KEEP


def test_plan_lists_every_refusal_and_a_taken_name_outweighs_a_missing_one():
    image = Resource("image", "given", "app-tier", managed=False)
    observed = {("image", "given"): None, ("queue", "a"): Observed("queue", "a", "id", owned=False)}
    with pytest.raises(NameTakenError) as refused:
        plan([image, resource("a")], observed)
    assert str(refused.value).splitlines() == [
        "the stack cannot be set up:", "  - image given does not exist",
        "  - queue a exists but is not tagged for this stack: the name is taken; choose another stack name "
        "(--stack) or remove it"]


def test_apply_keeps_what_a_failed_run_made_unless_asked_to_roll_back():
    kept = queues_engine("a", "b", "c", fail_on_create="c")
    with pytest.raises(CloudError, match="injected"):
        kept.apply(kept.plan(), quiet)
    assert set(kept.drivers["queue"].items) == {"a", "b"}

    lines = []
    rolled = queues_engine("a", "b", "c", fail_on_create="c")
    rolled.drivers["queue"].items["a"] = Observed("queue", "a", "id-a", True)  # made by an earlier run
    with pytest.raises(CloudError, match="injected"):
        rolled.apply(rolled.plan(), lines.append, roll_back=True)
    assert set(rolled.drivers["queue"].items) == {"a"}
    assert lines == ["create queue b: done", "up failed: removing the 2 resource(s) this run created",
                     "rolled back: queue c: already absent", "rolled back: queue b: deleted"]


def test_apply_converges_and_returns_only_the_changes_made():
    stack = engine([resource("a"), resource("b", size="2")], {"queue": InMemoryDriver("queue")})
    stack.drivers["queue"].items["a"] = Observed("queue", "a", "id-a", True)
    stack.drivers["queue"].items["b"] = Observed("queue", "b", "id-b", True, {"size": "1"})
    lines = []
    assert [c.describe() for c in stack.apply(stack.plan(), lines.append)] == ["update queue b: size: 1 -> 2"]
    assert lines == ["update queue b: size: 1 -> 2: done"]
    assert stack.plan()[1].action == ACTION_KEEP


def test_delete_in_reverse_spares_what_is_not_the_stacks_and_says_so_in_the_clouds_words():
    stack = queues_engine("a", "b", "c", not_ours="not tagged for stack unit")
    stack.drivers["queue"].items["a"] = Observed("queue", "a", "id-a", True)
    stack.drivers["queue"].put_foreign("b")
    lines = []
    assert stack.delete_in_reverse(lines.append) == lines == [
        "queue c: already absent", "queue b: left alone (not tagged for stack unit)", "queue a: deleted"]
    assert set(stack.drivers["queue"].items) == {"b"}


def test_a_resource_the_stack_only_refers_to_is_never_deleted():
    given = Resource("image", "given", "app-tier", managed=False)
    images = InMemoryDriver("image")
    images.items["given"] = Observed("image", "given", "img-1", True)
    assert engine([given], {"image": images}).delete(given) == "image given: kept (referenced by id, not owned)"
    assert "given" in images.items


def test_delete_retries_while_the_cloud_says_busy():
    stack = engine([resource("a")], {"queue": Busy("queue", times=3)})
    stack.drivers["queue"].items["a"] = Observed("queue", "a", "id-a", True)
    assert stack.delete(resource("a")) == "queue a: deleted"
    assert len(stack.clock.sleeps) == 3


def test_delete_every_removes_each_of_one_name_until_one_is_not_the_stacks():
    assert engine([], {"queue": Duplicates("queue", True, True)}).delete_every(resource()) == "queue r: deleted (2)"
    spared = Duplicates("queue", False, True, True)
    assert engine([], {"queue": spared}).delete_every(resource()) == (
        "queue r: 2 deleted; another of that name is not this stack's and was left alone")
    assert [o.owned for o in spared.stacked] == [False]


def test_delete_names_why_a_driver_kept_what_it_declined_to_delete():
    images = InMemoryDriver("image")
    images.items["r"] = Observed("image", "r", "img-1", True)
    images.delete = lambda observed: False
    stack = engine([], {"image": images}, kept_because={"image": "not uploaded by this stack"})
    assert stack.delete_every(resource(kind="image")) == "image r: kept (not uploaded by this stack)"
    assert engine([], {"image": images}).delete_every(resource(kind="image")) == "image r: kept"


def test_status_marks_missing_taken_and_drifted_and_says_whether_anything_is_missing():
    stack = engine([resource("a", size="2"), resource("b"), resource("c"), resource("d")],
                   {"queue": InMemoryDriver("queue")})
    items = stack.drivers["queue"].items
    items["a"] = Observed("queue", "a", "id-a", True, {"size": "1"}, notes=("a note",))
    items["b"] = Observed("queue", "b", "id-b", owned=False)
    items["d"] = Observed("queue", "d", "id-d", True, notes=("note 1", "note 2"))
    rows = {row["name"]: row for row in stack.status()}
    assert {name: row["state"] for name, row in rows.items()} == {
        "a": "drifted", "b": STATE_TAKEN, "c": STATE_MISSING, "d": "ok"}
    assert rows["a"]["detail"] == "size: 1 -> 2" and rows["d"]["detail"] == "note 1; note 2"
    assert rows["c"]["id"] == "" and rows["d"]["id"] == "id-d"
    assert anything_missing(list(rows.values()))
    assert anything_missing([rows["b"]]) and anything_missing([rows["c"]])
    assert not anything_missing([rows["a"], rows["d"]])
