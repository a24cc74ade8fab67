"""Files written whole or not at all (hybrid.core.files)."""
from __future__ import annotations

import os
import stat

import pytest

from hybrid.core import files


def test_a_write_replaces_the_file_with_every_part_and_the_mode_asked_for(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("old")
    files.write_atomically(path, (b"new ", b"content"), mode=0o644, sync_folder=True)
    assert path.read_bytes() == b"new content"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "port"
    path.write_bytes(b"5000")

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomically(path, b"6000")
    assert path.read_bytes() == b"5000"
    assert os.listdir(tmp_path) == ["port"]
