"""A server's SSH host keys as its own console printed them: what SSH to the server is pinned to (no trust on first
use).

On a new instance's first boot cloud-init (module ``keys_to_console``, script ``write-ssh-key-fingerprints``) prints
two blocks on the console, each line through ``logger --stderr -t ec2``, so every line may carry a syslog prefix
(``<14>Dec  7 17:31:02 ec2: ``)::

    -----BEGIN SSH HOST KEY FINGERPRINTS-----
    256 SHA256:6hUKrL1TvY1UEl9d8bUoMBkS3s0ZQEI3Y9mcpplxLtY root@web (ED25519)
    -----END SSH HOST KEY FINGERPRINTS-----
    -----BEGIN SSH HOST KEY KEYS-----
    ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... root@web
    -----END SSH HOST KEY KEYS-----

Nova returns that console (``get_server_console_output``). ``console_host_keys`` (pure) reads the last complete
block of each kind, skipping whatever else the console interleaves (kernel and journal lines, ANSI colours, carriage
returns): the public keys themselves when printed, else the SHA256 fingerprints. A line is taken only when it is
whole (a key's blob must parse as SSH wire format of its declared type), so a key cut by another line is not pinned.
``wait_for_console_host_keys`` polls the console until a block is complete: a console that has not printed them yet
means wait, never trust. cloud-init prints them on an instance's first boot only, so the stack remembers what a
server's console printed (by server id) for when a reboot has cleared the console.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hybrid.core.clock import Clock
from hybrid.core.errors import HostKeyError
from hybrid.core.wait import Poll, wait_for

log = logging.getLogger(__name__)
HOST_KEYS_TIMEOUT = 600.0
"""Seconds to wait for the console to show the host keys: cloud-init prints them at the end of its final stage,
a minute or more after the server is ACTIVE under software emulation."""
POLL_INTERVAL = 5.0

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
CLOUD_INIT_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at ")
BLOCK = re.compile(r"-----(BEGIN|END) SSH HOST KEY (FINGERPRINTS|KEYS)-----")
KEY_LINE = re.compile(r"(?<![\w-])(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(?:256|384|521))"
                      r"\s+([A-Za-z0-9+/]+={0,2})(?=\s|$)")
FINGERPRINT_LINE = re.compile(r"(?<!\S)(\d+)\s+SHA256:([A-Za-z0-9+/]{43})=?\s.*\((ED25519|ECDSA|RSA|DSA)\)\s*$")
FIELDS = {"ssh-ed25519": 2, "ssh-rsa": 3, "ssh-dss": 5, "ecdsa-sha2-nistp256": 3, "ecdsa-sha2-nistp384": 3,
          "ecdsa-sha2-nistp521": 3}
"""How many length-prefixed strings the wire blob of each key type holds (its type name included)."""
RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
"""The SSH host key algorithms that an ``ssh-rsa`` key signs with."""


@dataclass(frozen=True)
class HostKey:
    """One host key of a server, as its console printed it: its type (``ssh-ed25519``, ``ecdsa-sha2-nistp256``,
    ``ssh-rsa``), its SHA256 fingerprint (``SHA256:...``, OpenSSH's form) and, when the console printed the key
    itself, its public key (the base64 blob)."""

    key_type: str
    fingerprint: str
    public_key: str = ""

    def matches(self, key_type: str, blob: bytes) -> bool:
        """Whether a key a server offered (its type name and wire blob) is this one: the whole key when known,
        else its fingerprint."""
        if key_type != self.key_type:
            return False
        if self.public_key:
            return blob == base64.b64decode(self.public_key)
        return fingerprint(blob) == self.fingerprint

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The SSH host key algorithms that prove this key."""
        return RSA_ALGORITHMS if self.key_type == "ssh-rsa" else (self.key_type,)

    def describe(self) -> str:
        return f"{self.key_type} {self.fingerprint}"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key's wire blob: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def console_host_keys(console: str) -> tuple[HostKey, ...]:
    """The host keys of the last complete blocks of the console, one per key type: from the KEYS block (whole public
    keys) first, then, for types it lacks, from the FINGERPRINTS block. Empty when no block is complete yet; raises
    ``HostKeyError`` when the two blocks name different keys of one type."""
    blocks = complete_blocks(clean_lines(console))
    keys = [key for line in blocks.get("KEYS", ()) if (key := key_of_line(line))]
    fingerprints = [key for line in blocks.get("FINGERPRINTS", ()) if (key := fingerprint_of_line(line))]
    chosen: dict[str, HostKey] = {}
    for key in keys + fingerprints:
        pinned = chosen.setdefault(key.key_type, key)
        if pinned.fingerprint != key.fingerprint:
            raise HostKeyError(f"the console's two blocks disagree on the {key.key_type} host key: "
                               f"{pinned.fingerprint} and {key.fingerprint}; no key of that console is trusted")
    return tuple(chosen.values())


def clean_lines(console: str) -> list[str]:
    """The console's lines without ANSI escape sequences, carriage returns and other control characters."""
    text = ANSI.sub("", console)
    return ["".join(c for c in line if c == "\t" or c >= " ") for line in re.split(r"\r\n|\r|\n", text)]


def complete_blocks(lines: Iterable[str]) -> dict[str, list[str]]:
    """The lines inside the last BEGIN ... END pair of each block kind (a block without its END is not counted)."""
    found: dict[str, list[str]] = {}
    open_kind, inside = "", []
    for line in lines:
        marker = BLOCK.search(line)
        if marker is None:
            if open_kind:
                inside.append(line)
            continue
        edge, kind = marker.groups()
        if edge == "BEGIN":
            open_kind, inside = kind, []
        elif kind == open_kind:
            found[kind], open_kind = inside, ""
    return found


def key_of_line(line: str) -> HostKey | None:
    """The public key on one line of the KEYS block, when it is whole."""
    match = KEY_LINE.search(line)
    if match is None:
        return None
    key_type, encoded = match.groups()
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not well_formed(key_type, blob):
        return None
    return HostKey(key_type, fingerprint(blob), base64.b64encode(blob).decode())


def fingerprint_of_line(line: str) -> HostKey | None:
    """The fingerprint on one line of the FINGERPRINTS block (``ssh-keygen -l``: bits, fingerprint, comment,
    (TYPE))."""
    match = FINGERPRINT_LINE.search(line)
    if match is None:
        return None
    bits, digest, kind = match.groups()
    key_type = {"ED25519": "ssh-ed25519", "RSA": "ssh-rsa", "DSA": "ssh-dss"}.get(kind, f"ecdsa-sha2-nistp{bits}")
    if key_type not in FIELDS:
        return None
    return HostKey(key_type, f"SHA256:{digest}")


def well_formed(key_type: str, blob: bytes) -> bool:
    """Whether ``blob`` is exactly the SSH wire encoding of a key of ``key_type``: its length-prefixed strings,
    the first naming the type, and nothing after the last."""
    fields, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return False
        (size,) = struct.unpack(">I", blob[offset:offset + 4])
        if offset + 4 + size > len(blob):
            return False
        fields.append(blob[offset + 4:offset + 4 + size])
        offset += 4 + size
    return len(fields) == FIELDS.get(key_type) and fields[0] == key_type.encode()


def host_key_algorithms(keys: Sequence[HostKey]) -> tuple[str, ...]:
    """The host key algorithms SSH may accept from the server: those of its pinned keys only, so it never settles
    on a key type its console did not print."""
    return tuple(dict.fromkeys(a for key in keys for a in key.algorithms))


def wait_for_console_host_keys(conn: Any, server_id: str, name: str, clock: Clock | None = None,
                               timeout: float = HOST_KEYS_TIMEOUT,
                               remembered: Sequence[HostKey] = ()) -> tuple[HostKey, ...]:
    """The server's host keys from its console (Nova's console log), polled until cloud-init has printed them.

    cloud-init prints them once per instance, before its "finished" line: a console that shows that line and no keys
    lost them (a reboot or a rotated log): then ``remembered`` (what this server's console printed before) is used,
    else ``HostKeyError``. Raises ``WaitTimeout`` after ``timeout`` seconds while cloud-init has not finished."""
    def probe() -> Poll[tuple[HostKey, ...]]:
        console = conn.compute.get_server_console_output(server_id).get("output") or ""
        keys = console_host_keys(console)
        if not keys and CLOUD_INIT_FINISHED.search(console):
            if remembered:
                log.info("server %s: its console no longer shows its host keys; using those it printed before",
                         name)
                return Poll(tuple(remembered), done=True, state="remembered")
            raise HostKeyError(f"server {name}'s console shows cloud-init finished but no SSH host keys (printed "
                               "only on an instance's first boot: gone after a reboot or a rotated console log, or "
                               "cloud-init's keys_to_console is off); refusing to trust its key unseen. See "
                               f"`openstack console log show {server_id}`")
        return Poll(keys, done=bool(keys), state="printed" if keys else
                    f"no complete SSH HOST KEY block in the console's {len(console)} characters yet")

    what = (f"the SSH host keys of server {name} on its console (cloud-init prints them at the end of its first boot; "
            f"see `openstack console log show {server_id}`)")
    keys = wait_for(what, probe, timeout, POLL_INTERVAL, clock)
    log.info("server %s: host keys from its console: %s", name, ", ".join(k.describe() for k in keys))
    return keys


def host_keys_json(server_id: str, keys: Sequence[HostKey]) -> str:
    """What the stack remembers of a server's host keys: its id and the keys its console printed."""
    return json.dumps({"server": server_id, "host_keys": [dataclasses.asdict(k) for k in keys]}, indent=1)


def host_keys_from_json(text: str, server_id: str) -> tuple[HostKey, ...]:
    """The remembered keys when they are that server's (another server at the same name: none)."""
    try:
        saved = json.loads(text)
        if saved.get("server") != server_id:
            return ()
        return tuple(HostKey(**each) for each in saved["host_keys"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return ()
