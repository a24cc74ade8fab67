"""The web tier's front (nginx): its configuration carries the settings' limits, and nginx itself accepts it."""
from __future__ import annotations

import subprocess

import pytest

from hybrid.core import nginx
from hybrid.core.settings import load
from web_tier import front


def settings(tmp_path, **values):
    return load(None, {}, {"stack": "unit", "state_dir": str(tmp_path), **values})


def test_the_configuration_carries_the_limits_of_the_settings(tmp_path):
    made = settings(tmp_path, **{"web.bind": "0.0.0.0:8123", "web.client_timeout": "7",
                                 "web.connections_per_client": "33", "web.max_upload_bytes": "2000000",
                                 "web.request_timeout": "45"})
    paths = front.front_paths(made)
    config = front.render_config(made, paths)
    assert "listen 0.0.0.0:8123 backlog=4096;" in config
    assert "client_header_timeout 7s;" in config and "client_body_timeout 7s;" in config
    assert f"client_max_body_size {2000000 + front.MULTIPART_OVERHEAD};" in config
    assert "limit_conn per_client 33;" in config and "limit_conn_status 429;" in config
    assert f"server unix:{paths.socket};" in config
    assert "proxy_read_timeout 75s;" in config
    assert 'return 413 "error: the request body is larger than the 2000000-byte limit\\n"' in config
    assert "user root;" not in config


def test_status_and_metrics_answer_only_on_the_machine_itself(tmp_path):
    config = front.render_config(settings(tmp_path), front.front_paths(settings(tmp_path)))
    block = config.split("location ~ ^/(status|metrics)/?$ {", 1)[1].split("}", 1)[0]
    assert [line.strip() for line in block.strip().splitlines()] == [
        "allow 127.0.0.1;", "allow ::1;", "deny all;", "proxy_pass http://gunicorn;"]


def test_one_folder_per_stack_and_port_under_the_state_folder(tmp_path):
    paths = front.front_paths(settings(tmp_path, **{"web.bind": "127.0.0.1:8001"}))
    assert paths.prefix == tmp_path.resolve() / "web" / "front-unit-8001"
    assert paths.socket.parent == paths.prefix


def test_a_state_folder_too_deep_for_a_unix_socket_puts_the_socket_in_a_private_folder_under_tmp(tmp_path):
    deep = tmp_path / ("d" * 90)
    paths = front.front_paths(settings(deep))
    assert paths.prefix.is_relative_to(deep.resolve())
    assert paths.socket.parent == front.Path(front.SHORT_SOCKETS.format(uid=front.os.getuid()))
    assert len(str(paths.socket)) <= front.UNIX_PATH_MAX
    assert front.front_paths(settings(deep)) == paths != front.front_paths(settings(tmp_path / ("e" * 90)))
    front.make_folder(paths)
    assert oct(paths.socket.parent.stat().st_mode & 0o777) == "0o700"


def test_a_socket_folder_that_is_not_private_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.symlink_to(tmp_path)
    with pytest.raises(front.FrontError, match="is not a private folder of this user"):
        front.make_folder(front.FrontPaths(tmp_path / "prefix", shared / "gunicorn.sock"))


def test_nginx_accepts_the_configuration(tmp_path):
    made = settings(tmp_path)
    paths = front.front_paths(made)
    front.make_folder(paths)
    paths.config.write_text(front.render_config(made, paths, run_as_root=True))
    done = subprocess.run([str(nginx.binary()), "-p", str(paths.prefix), "-c", str(paths.config), "-e", "stderr",
                           "-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert oct(paths.prefix.stat().st_mode & 0o777) == "0o700"


def test_a_port_in_use_is_a_clear_error_before_nginx_starts(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        made = settings(tmp_path, **{"web.bind": f"127.0.0.1:{port}"})
        with pytest.raises(front.FrontError, match=f"cannot listen on web.bind 127.0.0.1:{port}"):
            front.start(made, front.front_paths(made))


def test_no_nginx_is_a_clear_error_that_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nginx.Path, "is_file", lambda self: False)
    with pytest.raises(nginx.NginxMissing, match="scripts/test.sh install it"):
        nginx.binary(tmp_path / "none")
