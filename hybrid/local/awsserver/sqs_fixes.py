"""Fixes to moto's SQS backend, applied by the project's emulator launcher before the server starts.

Measured defects of moto 5.2.5 (``shared/notes/local-aws.md``):

1. Receive is not atomic across concurrent HTTP requests, so two consumers can get the same message.
   Fix: one lock around every call that reads or changes messages (send, receive, delete, change visibility,
   purge). A long poll waits *outside* the lock, on the queue's own condition, and retries.
2. Receive (and send) cost grows with queue depth: for each message received, moto recomputes every queue
   attribute (three full passes over the queue) to check retention; each send does the same to read one flag; and
   deletes scan the whole queue for the receipt handle.
   Fix: standard queues get a receive that walks the queue lazily and stops after ``count`` messages, a cheap
   retention check, the three message counts computed in one pass, and a receipt-handle index so delete and
   change-visibility are O(1) lookups.

Also: moto keeps every ``Message`` ever created in a class-level list (for its model-introspection API), so a
long-running emulator never frees sent messages. Messages are no longer tracked there.

FIFO queues keep moto's own receive (group ordering rules), made atomic by the same lock.
These patches reach into moto internals: ``apply()`` refuses any moto version but the pinned one.
"""
from __future__ import annotations

import threading
from copy import deepcopy
from typing import Any

PINNED_MOTO = "5.2.5"
_LOCK = threading.RLock()
_applied = False


class _Untracked(list):
    """A list that drops what is appended: stops moto from keeping every message alive."""

    def append(self, item: Any) -> None:
        return None


def require_pinned_moto(what: str) -> None:
    """Refuses to patch any moto but the pinned one: the patches reach into its internals."""
    import moto

    if moto.__version__ != PINNED_MOTO:
        raise RuntimeError(f"{what} were written for moto {PINNED_MOTO}, found {moto.__version__}; "
                           "install the version pinned in pyproject.toml")


def apply() -> None:
    """Patches moto's SQS backend in this process. Idempotent."""
    global _applied
    from moto.sqs import models

    require_pinned_moto("SQS fixes")
    if _applied:
        return
    backend = models.SQSBackend
    originals = {name: getattr(backend, name) for name in (
        "receive_message", "delete_message", "change_message_visibility", "send_message",
        "send_message_batch", "purge_queue", "delete_queue")}
    backend.receive_message = _make_receive(originals["receive_message"])
    backend.delete_message = _make_delete(originals["delete_message"])
    backend.change_message_visibility = _make_change_visibility(originals["change_message_visibility"])
    backend.purge_queue = _make_purge(originals["purge_queue"])
    for name in ("send_message", "send_message_batch", "delete_queue"):
        setattr(backend, name, _locked(originals[name]))
    backend.is_message_valid_based_on_retention_period = _within_retention
    _count_in_one_pass(models.Queue)
    models.Message.instances_tracked = _Untracked()
    _applied = True


_COUNTS = threading.local()
_COUNT_PROPERTIES = ("approximate_number_of_messages", "approximate_number_of_messages_not_visible",
                     "approximate_number_of_messages_delayed")


def _count_in_one_pass(queue_class: Any) -> None:
    """``Queue.attributes`` computes its three message counts in one pass instead of three."""
    original = queue_class.attributes.fget

    def attributes(queue: Any) -> dict[str, Any]:
        _COUNTS.value = (queue, _message_counts(queue))
        try:
            return original(queue)
        finally:
            _COUNTS.value = None

    queue_class.attributes = property(attributes)
    for index, name in enumerate(_COUNT_PROPERTIES):
        setattr(queue_class, name, property(lambda queue, i=index: _counts_for(queue)[i]))


def _counts_for(queue: Any) -> tuple[int, int, int]:
    cached = getattr(_COUNTS, "value", None)
    return cached[1] if cached and cached[0] is queue else _message_counts(queue)


def _message_counts(queue: Any) -> tuple[int, int, int]:
    """(visible, not visible, delayed) with moto's own definitions, in one pass."""
    from moto.core.utils import unix_time_millis

    now = unix_time_millis()
    visible = not_visible = delayed = 0
    for message in list(queue._messages):
        is_visible, is_delayed = now > message.visible_at, now < message.delayed_until
        visible += is_visible and not is_delayed
        not_visible += not is_visible
        delayed += is_delayed
    return visible, not_visible, delayed


def _locked(method: Any) -> Any:
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(self, *args, **kwargs)

    locked.__name__ = method.__name__
    return locked


def _make_purge(original: Any) -> Any:
    def purge_queue(self: Any, queue_name: str) -> None:
        with _LOCK:
            original(self, queue_name)
            _handles(self.get_queue(queue_name)).clear()

    return purge_queue


def _handles(queue: Any) -> dict[str, Any]:
    """Receipt handle -> message, for the messages this patch delivered."""
    return queue.__dict__.setdefault("_hybrid_handles", {})


def _within_retention(self: Any, queue_name: str, message: Any) -> bool:
    from moto.core.utils import unix_time_millis

    queue = self.get_queue(queue_name)
    return message.sent_timestamp + int(queue.message_retention_period) * 1000 > unix_time_millis()


def _make_receive(original: Any) -> Any:
    def receive_message(self: Any, queue_name: str, count: int, wait_seconds_timeout: int,
                        visibility_timeout: int, message_attribute_names: list[str] | None = None) -> list[Any]:
        from moto.core.utils import unix_time

        queue = self.get_queue(queue_name)
        deadline = unix_time() + (wait_seconds_timeout or 0)
        while True:
            with _LOCK:
                if queue.fifo_queue:
                    result = original(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
                else:
                    result = _receive_standard(queue, count, visibility_timeout, message_attribute_names or [])
            remaining = deadline - unix_time()
            if result or remaining <= 0:
                return result
            queue.wait_for_messages(min(remaining, 1.0))

    return receive_message


def _receive_standard(queue: Any, count: int, visibility_timeout: int, attribute_names: list[str]) -> list[Any]:
    """One lazy pass: stops as soon as ``count`` visible messages are taken."""
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import _filter_message_attributes

    now = unix_time_millis()
    retention_ms = int(queue.message_retention_period) * 1000
    max_receives = queue.redrive_policy["maxReceiveCount"] if queue.dead_letter_queue and queue.redrive_policy \
        else None
    result, to_dead_letters, expired = [], [], []
    for message in queue._messages:
        if now <= message.visible_at or now < message.delayed_until:
            continue
        queue.pending_messages.discard(message)
        if message.sent_timestamp + retention_ms <= now:
            expired.append(message)
            continue
        if max_receives is not None and message.approximate_receive_count >= max_receives:
            to_dead_letters.append(message)
            continue
        result.append(_deliver(queue, message, visibility_timeout, attribute_names, _filter_message_attributes))
        if len(result) >= count:
            break
    for message in expired + to_dead_letters:
        _forget(queue, message)
    for message in to_dead_letters:
        queue.dead_letter_queue.add_message(message)
    return result


def _deliver(queue: Any, message: Any, visibility_timeout: int, attribute_names: list[str], filter_: Any) -> Any:
    queue.pending_messages.add(message)
    message.mark_received(visibility_timeout=visibility_timeout)
    _handles(queue)[message.receipt_handle] = message
    delivered = deepcopy(message)
    filter_(delivered, attribute_names)
    return delivered


def _forget(queue: Any, message: Any) -> None:
    """Removes a message from the queue and the handle index (delete, expiry or move to the dead-letter queue)."""
    queue._messages.remove(message)
    queue.pending_messages.discard(message)
    handles = _handles(queue)
    for handle in message.all_receipt_handles:
        handles.pop(handle, None)


def _indexed_message(queue: Any, receipt_handle: str) -> Any:
    """The live message behind a handle this patch handed out, or None (unknown, deleted or moved)."""
    message = _handles(queue).get(receipt_handle)
    if message is None or receipt_handle in queue.deleted_messages:
        return None
    return message


def _make_delete(original: Any) -> Any:
    def delete_message(self: Any, queue_name: str, receipt_handle: str) -> None:
        with _LOCK:
            queue = self.get_queue(queue_name)
            message = _indexed_message(queue, receipt_handle)
            if message is None:
                return original(self, queue_name, receipt_handle)
            _forget(queue, message)
            queue.deleted_messages.update(message.all_receipt_handles)

    return delete_message


def _make_change_visibility(original: Any) -> Any:
    def change_message_visibility(self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int) -> None:
        with _LOCK:
            queue = self.get_queue(queue_name)
            message = _indexed_message(queue, receipt_handle)
            if message is None:
                return original(self, queue_name, receipt_handle, visibility_timeout)
            _check_visibility_limit(message, visibility_timeout)
            message.change_visibility(visibility_timeout)
            if message.visible:
                queue.pending_messages.discard(message)
                queue._messages_lock.acquire()
                queue._messages_lock.notify_all()
                queue._messages_lock.release()

    return change_message_visibility


def _check_visibility_limit(message: Any, visibility_timeout: int) -> None:
    from moto.core.utils import unix_time_millis
    from moto.sqs.exceptions import InvalidParameterValue

    if unix_time_millis() + int(visibility_timeout) * 1000 - message.sent_timestamp > 43200 * 1000:
        raise InvalidParameterValue(f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. "
                                    "Reason: Total VisibilityTimeout for the message is beyond the limit "
                                    "[43200 seconds]")
