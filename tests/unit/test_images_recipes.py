"""Image recipes: systemd units (systemd-analyze when present, a Python parse always), cloud-config user data
(YAML, header, a schema of the keys used; cloud-init's own schema check when installed; no apt, no package index, the
wheelhouse URL in a root-only file), bake.sh's download step run for real against a local HTTP server, and the
boot-time settings step."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from hybrid.core.errors import ConfigError, HybridError
from hybrid.core.settings import Settings, load
from hybrid.machine_images import recipes
from hybrid.machine_images.recipes import (
    HYBRID_BIN,
    RECIPES_DIR,
    ROLES,
    bake_user_data,
    boot_user_data,
    install_settings,
    recipe,
    render_cloud_config,
    settings_toml,
)

ALL_UNITS = sorted({unit for role in ROLES for unit in recipe(role).units})
LONG_RUNNING = ["hybrid-worker.service", "hybrid-web.service", "hybrid-autoscaler.service"]
SHA = "ab" * 32
# What an AWS presigned GET with a session token looks like (the longest kind): about 1.4 KB.
PRESIGNED = ("https://shop-exports.s3.us-east-1.amazonaws.com/bake/" + "d" * 64 + "/wheelhouse.tar?"
             "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-east-1%2Fs3%2F"
             "aws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=10800&X-Amz-SignedHeaders=host&"
             "X-Amz-Security-Token=" + "Q" * 1000 + "&X-Amz-Signature=" + "f" * 64)
# The cloud-config keys these recipes use, with the shapes cloud-init's schema gives them.
CLOUD_CONFIG_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "package_update": {"type": "boolean"},
        "packages": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "write_files": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["path", "content"],
            "properties": {"path": {"type": "string", "pattern": "^/"}, "content": {"type": "string"},
                           "owner": {"type": "string", "pattern": "^[a-z_][a-z0-9_-]*:[a-z_][a-z0-9_-]*$"},
                           "permissions": {"type": "string", "pattern": "^0[0-7]{3}$"},
                           "encoding": {"enum": ["b64", "base64", "gzip", "gz", "text/plain"]},
                           "append": {"type": "boolean"}, "defer": {"type": "boolean"}}}},
        "runcmd": {"type": "array", "items": {"oneOf": [
            {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}},
    },
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values...]}} (keys such as Environment= repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], {})
            continue
        key, sep, value = stripped.partition("=")
        assert sep and current is not None and key == key.strip(), f"line {number} is not KEY=VALUE: {line!r}"
        current.setdefault(key, []).append(value.strip())
    return sections


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((RECIPES_DIR / recipes.unit_source(name)).read_text())


@pytest.mark.parametrize("name", ALL_UNITS)
def test_every_unit_has_its_sections_and_absolute_commands(name):
    parsed = unit(name)
    assert set(parsed) == {"Unit", "Service", "Install"}
    service = parsed["Service"]
    assert parsed["Unit"]["Description"] and parsed["Install"]["WantedBy"] == ["multi-user.target"]
    for key in ("ExecStart", "ExecStartPre", "ExecStartPost"):
        for command in service.get(key, []):
            assert command.lstrip("-+!@:").startswith("/"), f"{name}: {key}={command} is not an absolute path"
    assert service["StandardOutput"][0].startswith("journal") and service["StandardError"][0].startswith("journal")


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_log_to_the_journal_and_print_to_the_serial_console(name):
    service = unit(name)["Service"]
    assert service["StandardOutput"] == ["journal+console"]
    # The web tier's and the autoscaler's logs (a line per request, per tick) would flood the console log that Nova
    # and Horizon show: there only their stdout (the ready line); the worker logs little and keeps it all there.
    assert service["StandardError"] == ["journal+console" if name == "hybrid-worker.service" else "journal"]


def test_the_worker_powers_its_machine_off_when_it_exits_0_and_needs_no_polkit():
    parsed = unit("hybrid-worker.service")
    assert parsed["Unit"]["SuccessAction"] == ["poweroff"] and parsed["Service"]["Restart"] == ["on-failure"]
    assert not list(RECIPES_DIR.rglob("*.rules"))
    assert not any("polkit" in f.path for f in recipe("app-tier").files)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_restart_and_read_settings_from_etc_hybrid(name):
    parsed = unit(name)
    service = parsed["Service"]
    assert service["Type"] == ["simple"] and service["Restart"] == ["on-failure"]
    assert service["User"] == ["hybrid"]
    assert parsed["Unit"]["ConditionPathExists"] == ["/etc/hybrid/settings.json"]
    assert "hybrid-settings.service" in parsed["Unit"]["Requires"]
    assert service["ExecStart"][0].startswith(HYBRID_BIN + " ")


def test_worker_runs_the_worker_on_the_settings_file_with_instance_profile_credentials():
    service = unit("hybrid-worker.service")["Service"]
    assert service["ExecStart"] == [f"{HYBRID_BIN} worker --user-data /etc/hybrid/settings.json"]
    assert "HYBRID_AWS_USE_INSTANCE_METADATA=true" in service["Environment"]


@pytest.mark.parametrize("name,command", [("hybrid-web.service", "web"), ("hybrid-autoscaler.service", "autoscale")])
def test_web_tier_units_take_credentials_from_the_operator_file(name, command):
    service = unit(name)["Service"]
    assert service["ExecStart"] == [f"{HYBRID_BIN} {command}"]
    assert "AWS_SHARED_CREDENTIALS_FILE=/etc/hybrid/aws-credentials" in service["Environment"]
    assert "HYBRID_CONFIG=/etc/hybrid/hybrid.toml" in service["Environment"]


def test_units_pass_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (package systemd); the Python parse above still ran")
    root = tmp_path / "root"
    system = Path("/usr/lib/systemd/system")
    if system.is_dir():  # verify resolves default dependencies (sysinit.target...) under --root
        shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    bin_dir = root / "opt/hybrid/.venv/bin"
    bin_dir.mkdir(parents=True)
    for name in ("hybrid", "python"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in ALL_UNITS:
        shutil.copy(RECIPES_DIR / recipes.unit_source(name), units / name)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *sorted(str(p) for p in units.iterdir())],
                          capture_output=True, text=True, timeout=60, check=False)
    problems = [line for line in done.stderr.splitlines() if "hybrid" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_bake_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(RECIPES_DIR / "common/bake.sh")], check=False).returncode == 0


@pytest.mark.parametrize("role", ROLES)
def test_bake_user_data_is_cloud_config_with_units_and_no_settings(role):
    text = bake_user_data(role, PRESIGNED, SHA)
    assert text.startswith("#cloud-config\n") and len(text.encode()) <= recipes.USER_DATA_LIMIT
    config = yaml.safe_load(text)
    jsonschema.validate(config, CLOUD_CONFIG_SCHEMA)
    paths = {f["path"]: f for f in config["write_files"]}
    for name in recipe(role).units:
        assert paths[f"/etc/systemd/system/{name}"]["content"] == (RECIPES_DIR / recipes.unit_source(name)).read_text()
    assert paths[recipes.BAKE_SCRIPT]["permissions"] == "0755"
    assert "/etc/hybrid/settings.json" not in paths
    command = config["runcmd"][0]
    extra = "worker" if role == "app-tier" else "web"
    assert f"HYBRID_EXTRA={extra}" in command and f"HYBRID_ROLE={role}" in command
    assert command[-2:] == ["bash", recipes.BAKE_SCRIPT]


@pytest.mark.parametrize("role", ROLES)
def test_bake_installs_nothing_by_name_and_keeps_the_url_in_a_root_only_file(role):
    config = yaml.safe_load(bake_user_data(role, PRESIGNED, SHA))
    assert "packages" not in config and "package_update" not in config and "apt" not in config
    [source] = [f for f in config["write_files"] if PRESIGNED in f["content"]]
    assert source["path"] == recipes.WHEELHOUSE_SOURCE and source["permissions"] == "0600"
    assert json.loads(source["content"]) == {"url": PRESIGNED, "sha256": SHA}
    assert not any(PRESIGNED in " ".join(command) for command in config["runcmd"])


def test_bake_script_installs_offline_from_the_wheelhouse_and_cleans_up_before_ready():
    script = (RECIPES_DIR / "common/bake.sh").read_text()
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if re.search(r"\b(apt|apt-get|curl|wget)\b|set -x|pypi", line)]
    assert "venv --without-pip" in script and "--no-index --find-links" in script
    ready = script.index('report "HYBRID-BAKE-READY')
    for step in ("rm -f /etc/ssh/ssh_host_*", "cloud-init clean --logs", "truncate -s 0 /etc/machine-id",
                 'rm -rf "$WORK"', "fstrim -av"):
        assert script.index(step) < ready, step
    zero_fill = script.index("dd if=/dev/zero")  # free space zeroed after the deletions, before the unmap
    assert script.index("cloud-init clean --logs") < zero_fill < script.index("fstrim -av")


def test_user_data_over_16_kb_is_refused():
    with pytest.raises(HybridError, match="over EC2's limit"):
        bake_user_data("app-tier", "https://example.invalid/" + "x" * recipes.USER_DATA_LIMIT, SHA)


def test_only_the_presigned_url_is_spared_the_credentials_check():
    with pytest.raises(HybridError, match="credentials"):
        render_cloud_config({"write_files": [{"path": "/x", "content": PRESIGNED}]}, "test")
    with pytest.raises(HybridError, match="credentials"):
        render_cloud_config({"write_files": [{"path": "/x", "content": PRESIGNED + " AKIAABCDEFGHIJKLMNOP"}]},
                            "test", presigned=(PRESIGNED,))


# ---------------------------------------------------------------- bake.sh's download, run for real

def download_step() -> str:
    """The Python that bake.sh runs to fetch and check the wheelhouse (its heredoc)."""
    script = (RECIPES_DIR / "common/bake.sh").read_text()
    return script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]


@pytest.fixture
def served(tmp_path):
    """A local HTTP server with one file, /bake/wheelhouse.tar; anything else answers 403, as S3 does."""
    body = b"wheelhouse bytes " * 4096

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path.startswith("/bake/wheelhouse.tar")
            self.send_response(200 if ok else 403)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", body
    server.shutdown()


def run_download(tmp_path, url: str, sha256: str) -> subprocess.CompletedProcess:
    source = tmp_path / "source.json"
    source.write_text(json.dumps({"url": url, "sha256": sha256}))
    return subprocess.run([sys.executable, "-", str(source), str(tmp_path / "wheelhouse.tar")], input=download_step(),
                          capture_output=True, text=True, timeout=60, check=False)


def test_bake_download_checks_the_checksum_and_never_prints_the_url(tmp_path, served):
    base, body = served
    url = f"{base}/bake/wheelhouse.tar?X-Amz-Signature=secret-signature"
    done = run_download(tmp_path, url, hashlib.sha256(body).hexdigest())
    assert done.returncode == 0 and (tmp_path / "wheelhouse.tar").read_bytes() == body
    assert "verified" in done.stdout and "secret-signature" not in done.stdout + done.stderr

    wrong = run_download(tmp_path, url, SHA)
    assert wrong.returncode != 0 and "checksum mismatch" in wrong.stderr
    assert "secret-signature" not in wrong.stdout + wrong.stderr


@pytest.mark.parametrize("path, reason", [("/expired?X-Amz-Signature=secret-signature", "HTTP 403"),
                                          ("/bake/wheelhouse.tar?X-Amz-Signature=secret-signature", "refused")])
def test_a_failed_bake_download_says_why_without_the_url(tmp_path, served, path, reason):
    base, _ = served
    url = base + path if reason == "HTTP 403" else "http://127.0.0.1:9" + path
    done = run_download(tmp_path, url, SHA)
    assert done.returncode != 0 and "wheelhouse download failed" in done.stderr
    assert reason in done.stderr and "secret-signature" not in done.stdout + done.stderr


def test_app_tier_bake_prepares_the_model_before_enabling_units():
    script = (RECIPES_DIR / "common/bake.sh").read_text()
    assert script.index("/bin/hybrid\" models prepare") < script.index("systemctl enable")
    assert "HYBRID-BAKE-READY" in script.splitlines()[-1]


def test_boot_user_data_writes_the_settings_file_world_readable():
    settings = load(None, {}, {"stack": "shop", "aws.target": "aws", "aws.region": "eu-west-1"})
    config = yaml.safe_load(boot_user_data(settings))
    jsonschema.validate(config, CLOUD_CONFIG_SCHEMA)
    [entry] = config["write_files"]
    assert entry["path"] == "/etc/hybrid/settings.json" and entry["permissions"] == "0644"
    assert Settings.from_json(entry["content"]) == settings


def test_cloud_init_own_schema_check_when_installed(tmp_path):
    if not shutil.which("cloud-init"):
        pytest.skip("cloud-init is not installed here (it is not on PyPI; Debian package cloud-init); "
                    "the jsonschema check of the keys used ran instead")
    texts = [bake_user_data(role, PRESIGNED, SHA) for role in ROLES] + [boot_user_data(Settings())]
    for index, text in enumerate(texts):
        path = tmp_path / f"user-data-{index}.yaml"
        path.write_text(text)
        done = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("secret", ["AKIAABCDEFGHIJKLMNOP", "aws_secret_access_key = x",
                                    "-----BEGIN RSA PRIVATE KEY-----"])
def test_user_data_never_carries_credentials(secret):
    with pytest.raises(HybridError, match="credentials"):
        render_cloud_config({"write_files": [{"path": "/x", "content": secret}]}, "test")


def test_unknown_role_is_a_config_error():
    with pytest.raises(ConfigError, match="app-tier, web-tier"):
        recipe("db-tier")


def test_settings_toml_reads_back_as_the_same_settings():
    settings = load(None, {}, {"stack": "shop", "web.bind": "0.0.0.0:80", "scaling.poll_interval": "0.25",
                               "aws.use_instance_metadata": "true"})
    assert Settings.from_json(json.dumps(tomllib.loads(settings_toml(settings)))) == settings


def test_install_settings_takes_raw_json_user_data(tmp_path):
    settings = load(None, {}, {"stack": "shop"})
    user_data = tmp_path / "user-data.txt"
    user_data.write_text(settings.to_json())
    json_path, toml_path = tmp_path / "etc/settings.json", tmp_path / "etc/hybrid.toml"

    assert install_settings(user_data, json_path, toml_path) == settings

    assert Settings.from_json(json_path.read_text()) == settings
    assert load(toml_path, {}) == settings
    assert json_path.stat().st_mode & 0o777 == 0o644 and toml_path.stat().st_mode & 0o777 == 0o644


def test_install_settings_keeps_what_cloud_config_wrote(tmp_path):
    settings = load(None, {}, {"stack": "shop"})
    user_data = tmp_path / "user-data.txt"
    user_data.write_text(boot_user_data(settings))
    json_path = tmp_path / "settings.json"
    json_path.write_text(settings.to_json())
    assert install_settings(user_data, json_path, tmp_path / "hybrid.toml").stack == "shop"


def test_install_settings_without_any_settings_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no settings"):
        install_settings(tmp_path / "absent", tmp_path / "settings.json", tmp_path / "hybrid.toml")
    assert recipes.main(["wrong"]) == 2
