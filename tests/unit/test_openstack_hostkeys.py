"""Host keys read from a server's console (``hybrid.openstack.hostkeys``) and the SSH policy pinned to them
(``hybrid.openstack.remote.check_host_key``): real cloud-init output, prefixes and junk, incomplete blocks, a cut key
line, a mismatch refused with both fingerprints named, the wait for a console that has not printed them yet."""
from __future__ import annotations

import base64

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hybrid.core.clock import FakeClock
from hybrid.core.errors import HostKeyError, WaitTimeout
from hybrid.openstack.hostkeys import (HostKey, console_host_keys, fingerprint, host_key_algorithms,
                                       host_keys_from_json, host_keys_json, wait_for_console_host_keys)
from hybrid.openstack.remote import PinnedHostKeys, check_host_key, unpinned_algorithms

# What the fixture's Debian 12 server (cloud-init 22.4.2) printed, as Nova's console log returned it: the
# fingerprints through `logger` (tag cloud-init), the keys plain; systemd's colours reach the API with the ESC
# replaced, kernel and getty lines interleave.
REAL_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIPZoB8Bi2nfGP+EYDnVu472VQoi55K5beIxT9Hcxi2/i"
REAL_FINGERPRINT = "SHA256:T/JKIBw2t1/hXo37N20lzwxCFbqtgOEJPR6X/EdeTpA"
REAL_CONSOLE = f"""\
[[0;32m  OK  [0m] Started [0;1;39mssh.service[0m - OpenBSD Secure Shell server.
[   52.045004] cloud-init[360]: Cloud-init v. 22.4.2 running 'modules:config' at Mon, 07 Dec 2026 17:22:08 +0000.\r

Debian GNU/Linux 12 hkprobe-web-tier ttyS0

hkprobe-web-tier login: [   61.323279] cloud-init[397]: Cloud-init v. 22.4.2 running 'modules:final' at Mon, 07 Dec 2026
ci-info: | ssh-ed25519 | 40:16:fc:e3:7b:97:b2:8b:e0:c2:c9:71:86:9e:15:7d:e7:78:a3:77 |    -    | hybrid:stack=hkprobe |
<14>Dec  7 17:22:23 cloud-init: #############################################################
<14>Dec  7 17:22:23 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Dec  7 17:22:23 cloud-init: 256 {REAL_FINGERPRINT} root@hkprobe-web-tier (ED25519)
<14>Dec  7 17:22:23 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
<14>Dec  7 17:22:23 cloud-init: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
ssh-ed25519 {REAL_KEY} root@hkprobe-web-tier
-----END SSH HOST KEY KEYS-----
[   66.800443] cloud-init[397]: Cloud-init v. 22.4.2 finished at Mon, 07 Dec 2026 17:22:23 +0000. Datasource
[[0;1;31mFAILED[0m] Failed to start [0;1;39mcloud-fina\ufffd\ufffd\ufffd Execute cloud user/final scripts.
"""


def openssh_line(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


def blob_of(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


ED25519 = openssh_line(ed25519.Ed25519PrivateKey.generate())
ECDSA = openssh_line(ec.generate_private_key(ec.SECP256R1()))
RSA = openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_the_real_console_pins_its_whole_ed25519_key_whose_fingerprint_is_the_printed_one():
    [key] = console_host_keys(REAL_CONSOLE)
    assert key == HostKey("ssh-ed25519", REAL_FINGERPRINT, REAL_KEY)
    assert fingerprint(base64.b64decode(REAL_KEY)) == REAL_FINGERPRINT, "OpenSSH's SHA256 form"
    assert key.matches("ssh-ed25519", base64.b64decode(REAL_KEY))


def test_current_cloud_init_prints_both_blocks_through_logger_with_the_ec2_tag_and_ansi_colours():
    """cloud-init's newer write-ssh-key-fingerprints pipes both blocks to `logger --stderr -t ec2`."""
    lines = ["", "#" * 61, "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
             f"256 {fingerprint(blob_of(ECDSA))} root@web (ECDSA)",
             f"3072 {fingerprint(blob_of(RSA))} root@web (RSA)",
             f"256 {fingerprint(blob_of(ED25519))} root@web (ED25519)",
             "-----END SSH HOST KEY FINGERPRINTS-----", "#" * 61,
             "-----BEGIN SSH HOST KEY KEYS-----", ECDSA + " root@web", ED25519 + " root@web",
             "-----END SSH HOST KEY KEYS-----"]
    console = "\r\n".join(f"\x1b[0;1;39m<14>Dec  7 17:31:02 ec2: {line}\x1b[0m" for line in lines)
    keys = {key.key_type: key for key in console_host_keys(console)}
    assert keys["ssh-ed25519"].public_key == ED25519.split()[1]
    assert keys["ecdsa-sha2-nistp256"].public_key == ECDSA.split()[1]
    assert keys["ssh-rsa"] == HostKey("ssh-rsa", fingerprint(blob_of(RSA))), "no RSA key line: its fingerprint"
    assert keys["ssh-rsa"].matches("ssh-rsa", blob_of(RSA))


def test_fingerprints_alone_pin_when_the_keys_block_is_absent():
    console = ("ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
               f"ec2: 256 {fingerprint(blob_of(ED25519))} root@web (ED25519)\n"
               f"ec2: 256 {fingerprint(blob_of(ECDSA))} root@web (ECDSA)\n"
               "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n")
    keys = console_host_keys(console)
    assert [k.key_type for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]
    assert all(not k.public_key for k in keys)
    assert keys[0].matches("ssh-ed25519", blob_of(ED25519))
    assert not keys[0].matches("ssh-ed25519", blob_of(openssh_line(ed25519.Ed25519PrivateKey.generate())))


@pytest.mark.parametrize("console", [
    "",
    "[    0.000000] Linux version 6.1.0-28-cloud-amd64\nlogin: ",
    "-----BEGIN SSH HOST KEY KEYS-----\n" + ED25519 + " root@web\n",
    "<14>Dec  7 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n<14>Dec  7 ec2: 256 SHA256:abc",
], ids=["empty", "not-yet", "keys-block-without-end", "fingerprints-cut-off"])
def test_a_console_without_a_complete_block_pins_nothing(console):
    assert console_host_keys(console) == ()


def test_a_key_line_cut_by_a_kernel_message_is_not_pinned():
    encoded = ED25519.split()[1]
    cut = f"ssh-ed25519 {encoded[:24]}[   45.123456] random: crng init done\n{encoded[24:]} root@web"
    console = f"-----BEGIN SSH HOST KEY KEYS-----\n{cut}\n{ECDSA} root@web\n-----END SSH HOST KEY KEYS-----\n"
    assert [k.key_type for k in console_host_keys(console)] == ["ecdsa-sha2-nistp256"]


def test_a_truncated_blob_that_is_still_valid_base64_is_not_pinned():
    encoded = RSA.split()[1]
    console = f"-----BEGIN SSH HOST KEY KEYS-----\nssh-rsa {encoded[:200]}\n-----END SSH HOST KEY KEYS-----\n"
    assert console_host_keys(console) == ()


def test_a_blob_of_another_type_than_its_line_says_is_not_pinned():
    console = (f"-----BEGIN SSH HOST KEY KEYS-----\nssh-rsa {ED25519.split()[1]}\n"
               "-----END SSH HOST KEY KEYS-----\n")
    assert console_host_keys(console) == ()


def test_the_last_complete_block_wins():
    old, new = ED25519, openssh_line(ed25519.Ed25519PrivateKey.generate())
    console = "".join(f"-----BEGIN SSH HOST KEY KEYS-----\n{line}\n-----END SSH HOST KEY KEYS-----\n"
                      for line in (old, new))
    [key] = console_host_keys(console + "-----BEGIN SSH HOST KEY KEYS-----\n")
    assert key.public_key == new.split()[1]


def test_blocks_that_disagree_on_a_key_trust_nothing():
    other = openssh_line(ed25519.Ed25519PrivateKey.generate())
    console = ("-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
               f"256 {fingerprint(blob_of(other))} root@web (ED25519)\n"
               "-----END SSH HOST KEY FINGERPRINTS-----\n"
               f"-----BEGIN SSH HOST KEY KEYS-----\n{ED25519}\n-----END SSH HOST KEY KEYS-----\n")
    with pytest.raises(HostKeyError, match="disagree on the ssh-ed25519 host key"):
        console_host_keys(console)


def test_the_policy_accepts_the_consoles_key_and_refuses_another_naming_both_fingerprints():
    pinned = console_host_keys(REAL_CONSOLE)
    check_host_key("172.24.4.9", pinned, "ssh-ed25519", base64.b64decode(REAL_KEY))
    intruder = paramiko.Ed25519Key(data=blob_of(ED25519))
    with pytest.raises(HostKeyError) as refused:
        PinnedHostKeys(pinned).missing_host_key(paramiko.SSHClient(), "172.24.4.9", intruder)
    message = str(refused.value)
    assert fingerprint(blob_of(ED25519)) in message and REAL_FINGERPRINT in message
    assert "172.24.4.9" in message and "nothing was sent" in message


def test_the_policy_refuses_a_key_of_a_type_the_console_did_not_print():
    with pytest.raises(HostKeyError, match="console printed ssh-ed25519"):
        check_host_key("h", console_host_keys(REAL_CONSOLE), "ecdsa-sha2-nistp256", blob_of(ECDSA))


def test_only_the_pinned_key_types_are_offered_to_the_server():
    ed, rsa_pin = HostKey("ssh-ed25519", "SHA256:x"), HostKey("ssh-rsa", "SHA256:y")
    assert host_key_algorithms([ed, rsa_pin]) == ("ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
    assert unpinned_algorithms([ed]) == ["ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                                         "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa", "ssh-dss"]


class Console:
    """Nova's console log of one server, growing as the fake clock runs."""

    def __init__(self, clock: FakeClock, printed_at: float, after: str = REAL_CONSOLE) -> None:
        self.clock, self.printed_at, self.after, self.calls = clock, printed_at, after, 0

    def get_server_console_output(self, server_id: str) -> dict:
        self.calls += 1
        booting = "[    0.000000] Linux version 6.1.0\n"
        return {"output": booting + (self.after if self.clock.now() >= self.printed_at else "")}


class Conn:
    def __init__(self, compute: Console) -> None:
        self.compute = compute


def test_the_wait_polls_the_console_until_the_keys_are_printed():
    clock = FakeClock()
    console = Console(clock, printed_at=clock.now() + 60)
    keys = wait_for_console_host_keys(Conn(console), "id-1", "web", clock, timeout=300)
    assert keys == console_host_keys(REAL_CONSOLE) and console.calls > 1


def test_the_wait_gives_up_with_a_clear_error_never_trusting():
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match=r"SSH host keys of server web on its console.*console log show id-1"):
        wait_for_console_host_keys(Conn(Console(clock, printed_at=float("inf"))), "id-1", "web", clock, timeout=30)


REBOOTED = ("[    0.000000] Linux version 6.1.0\n"
            "[   20.1] cloud-init[397]: Cloud-init v. 22.4.2 finished at Mon, 07 Dec 2026 18:01:00 +0000. Datasource\n")


def test_a_console_that_shows_cloud_init_finished_without_keys_is_refused_at_once():
    clock = FakeClock()
    with pytest.raises(HostKeyError, match="cloud-init finished but no SSH host keys"):
        wait_for_console_host_keys(Conn(Console(clock, 0, after=REBOOTED)), "id-1", "web", clock)
    assert clock.sleeps == [], "no wait: the keys will not come"


def test_keys_the_console_printed_before_stand_in_once_it_lost_them_but_never_replace_printed_ones():
    clock, remembered = FakeClock(), console_host_keys(REAL_CONSOLE)
    assert wait_for_console_host_keys(Conn(Console(clock, 0, after=REBOOTED)), "id-1", "web", clock,
                                      remembered=remembered) == remembered
    other = (HostKey("ssh-ed25519", fingerprint(blob_of(ED25519)), ED25519.split()[1]),)
    assert wait_for_console_host_keys(Conn(Console(clock, 0)), "id-1", "web", clock, remembered=other) == remembered


def test_remembered_keys_belong_to_one_server_id():
    keys = console_host_keys(REAL_CONSOLE)
    text = host_keys_json("id-1", keys)
    assert host_keys_from_json(text, "id-1") == keys
    assert host_keys_from_json(text, "id-2") == ()
    assert host_keys_from_json("{not json", "id-1") == ()
