"""Key pairs whose private half lives on this machine: ``<key_dir>/<name>.pem``, mode 0600, written when the pair is
made and removed with it. What every cloud's key-pair driver shares; the cloud's SDK calls are its adapter's."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import NotFoundError


def write_private_key(path: Path, material: str) -> None:
    """Writes a private key readable by its owner only (mode 0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(material)


class KeyPairDriverBase(ABC):
    """A stack's key pair as a ``ResourceDriver``: a created pair's private key is written to ``key_dir``, a deleted
    pair's is removed, and a pair whose private key file is gone gets a note saying so (``without_key``: what that
    costs and how to get a new pair). A subclass makes the cloud's calls: ``find_pair``, ``make_pair`` and
    ``delete_pair``."""

    kind: str
    without_key: str

    def __init__(self, stack: str, key_dir: Path) -> None:
        self.stack, self.key_dir = stack, Path(key_dir)

    @abstractmethod
    def find_pair(self, name: str) -> tuple[str, bool] | None:
        """The pair of that name as (id, carries this stack's mark), or None if the cloud has none."""

    @abstractmethod
    def make_pair(self, resource: Resource) -> tuple[str, str]:
        """Makes the pair, marked for its stack: (id, private key material)."""

    @abstractmethod
    def delete_pair(self, name: str) -> None:
        """Deletes the pair; raises ``NotFoundError`` if it is already gone."""

    def key_path(self, name: str) -> Path:
        return self.key_dir / f"{name}.pem"

    def observe(self, resource: Resource) -> Observed | None:
        pair = self.find_pair(resource.name)
        if pair is None:
            return None
        pair_id, owned = pair
        return Observed(self.kind, resource.name, pair_id, owned, notes=self._key_notes(resource.name))

    def _key_notes(self, name: str) -> tuple[str, ...]:
        path = self.key_path(name)
        return () if path.exists() else (f"private key {path} is missing: {self.without_key}",)

    def create(self, resource: Resource) -> Observed:
        pair_id, private_key = self.make_pair(resource)
        write_private_key(self.key_path(resource.name), private_key)
        return Observed(self.kind, resource.name, pair_id, True)

    def update(self, resource: Resource, observed: Observed) -> None:
        return None

    def delete(self, observed: Observed) -> bool:
        """Deletes the pair and its private key file; False if the cloud no longer had the pair."""
        try:
            self.delete_pair(observed.name)
        except NotFoundError:
            return False
        finally:
            self.key_path(observed.name).unlink(missing_ok=True)
        return True
