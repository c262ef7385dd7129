"""`python -m captioning.serve`: its flags, its errors, and a clean stop."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import pytest

from captioning.serve import DEFAULT_HOST, ServeSettings, add_arguments
from captioning.serve.server import settings_from
from tests.helpers import REPO_ROOT
from tests.serve.conftest import EXAMPLES
from tests.serve.running import RunningServer, post_image


def _serve(*args):
    completed = subprocess.run([sys.executable, "-m", "captioning.serve", *map(str, args)],
                               capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    return completed.returncode, completed.stderr


def test_the_defaults_listen_on_this_machine_only():
    args = add_arguments(argparse.ArgumentParser()).parse_args([])
    assert (args.host, args.port, args.release) == (DEFAULT_HOST, 8000, None)
    assert DEFAULT_HOST == "127.0.0.1"
    assert settings_from(args) == ServeSettings()
    assert ServeSettings().max_upload_mb == 20


@pytest.mark.parametrize("flags, shown", [
    (["--max-batch", "0"], "error: --max-batch must be a positive integer, got 0"),
    (["--max-upload-mb", "-1"], "error: --max-upload-mb must be a number > 0, got -1.0"),
    (["--warm-beams", "1,9"], "error: each of --warm-beams must be an integer in 1..8, got 9"),
    (["--port", "70000"], "error: --port must be an integer in 0..65535, got 70000"),
    (["--release", "no/such/run"], "error: no/such/run: no release manifest here"),
])
def test_a_bad_flag_is_one_line_and_exit_2(flags, shown):
    code, stderr = _serve(*flags)
    assert code == 2
    assert stderr.strip().startswith(shown), stderr
    assert "Traceback" not in stderr


def test_a_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, stderr = _serve("--port", taken.getsockname()[1])
    assert code == 2
    assert "cannot listen on 127.0.0.1" in stderr and "pick another --port" in stderr


@pytest.mark.slow
def test_ctrl_c_stops_it_cleanly_and_removes_the_upload_folder(run, tmp_path):
    server = RunningServer("--release", run, "--warm-beams", 1, tmpdir=tmp_path)
    try:
        assert post_image(server.url, EXAMPLES[0].read_bytes()).status_code == 200
        assert len(server.upload_folders()) == 1
    finally:
        code = server.stop()
    assert code == 0, "".join(server.lines[-20:])
    assert server.upload_folders() == []
