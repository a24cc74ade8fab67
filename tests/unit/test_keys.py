"""The key-pair lifecycle both clouds' key-pair drivers share: the private key file on this machine."""
import stat

from hybrid.core.contracts import Observed, Resource
from hybrid.core.errors import NotFoundError
from hybrid.core.keys import KeyPairDriverBase, write_private_key


class PairsInMemory(KeyPairDriverBase):
    kind = "keypair"
    without_key = "no SSH"

    def __init__(self, key_dir):
        super().__init__("unit", key_dir)
        self.pairs = {}

    def find_pair(self, name):
        return (name, True) if name in self.pairs else None

    def make_pair(self, wanted):
        self.pairs[wanted.name] = True
        return wanted.name, "PRIVATE KEY"

    def delete_pair(self, name):
        if self.pairs.pop(name, None) is None:
            raise NotFoundError(f"key pair {name} not found")


def test_a_key_pairs_private_key_is_written_0600_noted_when_lost_and_removed_with_it(tmp_path):
    driver = PairsInMemory(tmp_path / "keys")
    pair = Resource("keypair", "k", "web-tier", {}, {"hybrid:stack": "unit"})
    made = driver.create(pair)
    key = tmp_path / "keys" / "k.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() == "PRIVATE KEY"
    assert driver.observe(pair) == Observed("keypair", "k", "k", True)
    key.unlink()
    assert driver.observe(pair).notes == (f"private key {key} is missing: no SSH",)
    write_private_key(key, "again")
    assert driver.delete(made) is True and not key.exists()
    write_private_key(key, "stale")
    assert driver.delete(made) is False and not key.exists(), "already gone: False, and the key file goes too"


def test_write_private_key_replaces_an_old_file_without_widening_its_mode(tmp_path):
    key = tmp_path / "k.pem"
    key.write_text("old")
    key.chmod(0o644)
    write_private_key(key, "new")
    assert key.read_text() == "new" and stat.S_IMODE(key.stat().st_mode) == 0o600
