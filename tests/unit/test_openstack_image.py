"""Local disk images: format detection, the VMDK conversion command, checksums."""
import pytest

from hybrid.core.errors import ConfigError
from hybrid.openstack.image import conversion_command, disk_format_of, prepare_image


def test_the_conversion_command_is_qemu_img_vmdk_to_qcow2(tmp_path):
    assert conversion_command(tmp_path / "web.vmdk", tmp_path / "out" / "web.qcow2") == [
        "qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(tmp_path / "web.vmdk"),
        str(tmp_path / "out" / "web.qcow2")]


def test_a_vmdk_is_converted_when_asked_and_uploaded_as_qcow2(tmp_path):
    source = tmp_path / "web.vmdk"
    source.write_bytes(b"KDMV" + b"\0" * 100)
    commands = []

    def runner(command):
        commands.append(list(command))
        (tmp_path / "work" / "web.qcow2").write_bytes(b"QFI\xfb converted")

    prepared = prepare_image(source, True, tmp_path / "work", runner)
    assert commands == [conversion_command(source, tmp_path / "work" / "web.qcow2")]
    assert (prepared.path, prepared.disk_format) == (tmp_path / "work" / "web.qcow2", "qcow2")
    assert prepare_image(source, True, tmp_path / "work", runner).md5 == prepared.md5
    assert len(commands) == 1, "an up-to-date conversion is reused"


def test_a_vmdk_is_uploaded_as_vmdk_without_convert(tmp_path):
    source = tmp_path / "disk.img"
    source.write_bytes(b"# Disk DescriptorFile\n")
    prepared = prepare_image(source, False, tmp_path, runner=lambda c: pytest.fail("no conversion"))
    assert (prepared.path, prepared.disk_format) == (source, "vmdk")
    assert len(prepared.md5) == 32 and len(prepared.sha512) == 128


def test_formats_come_from_magic_bytes_then_the_suffix(tmp_path):
    qcow2, other = tmp_path / "a.bin", tmp_path / "b.vmdk"
    qcow2.write_bytes(b"QFI\xfb....")
    other.write_bytes(b"anything")
    assert disk_format_of(qcow2) == "qcow2"
    assert disk_format_of(other) == "vmdk"
    bad = tmp_path / "c.raw"
    bad.write_bytes(b"raw bytes")
    with pytest.raises(ConfigError, match="not a qcow2 or VMDK"):
        disk_format_of(bad)


def test_a_missing_file_or_qemu_img_is_a_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such file"):
        prepare_image(tmp_path / "none.qcow2", False, tmp_path)
    source = tmp_path / "web.vmdk"
    source.write_bytes(b"KDMV")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="qemu-img is not installed"):
        prepare_image(source, True, tmp_path / "work")
