"""nginx, from Debian's package, unpacked where this Python's environment is: no root, no system service.

The web tier puts nginx in front of gunicorn, as gunicorn's deployment guide asks: nginx reads each request whole
(headers and body, with limits and timeouts) before gunicorn's threads see it, so slow clients cost nginx a
connection and no thread. Debian's ``nginx`` package is a plain binary that needs only libraries every Debian
system has; installing it with ``apt-get install`` would also start a system nginx on port 80, so the package is
unpacked instead (``dpkg -x``) into ``<environment>/nginx/``, with the ``.deb`` kept beside it: the web-tier image's
wheelhouse ships that same file, and its bake unpacks it into the image's environment the same way.

    python -m hybrid.core.nginx install     # what scripts/lib/venv.sh runs: download and unpack, once
    python -m hybrid.core.nginx where       # the binary that the web tier runs
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hybrid.core.errors import HybridError

PACKAGE = "nginx"
HOME = Path(sys.prefix) / "nginx"  # the unpacked package, and its .deb, in this Python's environment
BINARY = "usr/sbin/nginx"
INSTALL_HINT = "scripts/demo.sh and scripts/test.sh install it; or run `python -m hybrid.core.nginx install`"


class NginxMissing(HybridError):
    """No nginx binary where the web tier looks for it."""


def binary(home: Path = HOME) -> Path:
    """The nginx the web tier runs: the one unpacked in this environment, else one on PATH."""
    unpacked = home / BINARY
    if unpacked.is_file():
        return unpacked
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if found:
        return Path(found)
    raise NginxMissing(f"nginx is not installed (the web tier's front; looked in {unpacked} and on PATH): "
                       f"{INSTALL_HINT}")


def package_file(home: Path = HOME) -> Path:
    """The Debian package unpacked in ``home``: the web-tier image's wheelhouse ships this same file."""
    debs = sorted(home.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise NginxMissing(f"no {PACKAGE}_*.deb in {home}: {INSTALL_HINT}")
    return debs[-1]


def install(home: Path = HOME) -> Path:
    """Downloads Debian's nginx package (``apt-get download``: no root, nothing installed system-wide) and unpacks
    it into ``home``, once. Returns the binary."""
    if (home / BINARY).is_file() and list(home.glob(f"{PACKAGE}_*.deb")):
        return home / BINARY
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise NginxMissing("the web tier needs nginx from Debian's package, and this machine has no apt-get/dpkg: "
                           "install nginx (any version since 1.19.5) on PATH")
    home.mkdir(parents=True, exist_ok=True)
    deb = _download(home)
    _run(["dpkg", "-x", str(deb), str(home)], "unpack")
    _run([str(home / BINARY), "-v"], "run")
    return home / BINARY


def _download(home: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="hybrid-nginx-") as scratch:
        # As root, apt warns that its _apt user cannot write the scratch folder, then downloads unsandboxed.
        _run(["apt-get", "download", "-q", PACKAGE], "download", cwd=scratch)
        [deb] = Path(scratch).glob(f"{PACKAGE}_*.deb")
        return Path(shutil.copy2(deb, home / deb.name))


def _run(command: list[str], what: str, cwd: str | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise NginxMissing(f"could not {what} Debian's {PACKAGE} package ({' '.join(command)}): "
                           f"{' / '.join(detail) or f'exit {done.returncode}'}")


def main(argv: list[str]) -> int:
    try:
        if argv == ["install"]:
            print(install())
        elif argv == ["where"]:
            print(binary())
        else:
            print("usage: python -m hybrid.core.nginx install|where", file=sys.stderr)
            return 2
    except NginxMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
