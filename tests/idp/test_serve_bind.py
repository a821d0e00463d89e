"""`cityid serve` refuses an address another process listens on (issue 18 item 8): granian's
SO_REUSEPORT would otherwise let two servers split the traffic without a word."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from idp.serve import bind_problem
from tests.idp.conftest import free_port
from tests.idp.test_processes import CITYID, cityid


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("bind") / "d"
    cityid(data, "init")
    return data


def _serve(data: Path, bind: str) -> tuple[int, str]:
    proc = subprocess.Popen(
        [*CITYID, "serve", "--data-dir", str(data), "--bind", bind, "--workers", "1"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)
        pytest.fail(f"cityid serve started on {bind}, where another process listens")
    return proc.returncode, err


@pytest.fixture
def listener() -> Iterator[int]:
    """Another server on a port, listening as granian does (SO_REUSEPORT)."""
    port = free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        yield port


def test_serve_refuses_a_port_another_process_listens_on_with_exit_2(data_dir: Path, listener: int) -> None:
    code, err = _serve(data_dir, f"127.0.0.1:{listener}")
    assert code == 2 and "already listening" in err, err[-500:]


def test_serve_refuses_a_unix_socket_another_process_listens_on_with_exit_2(
    data_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "taken.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen()
        code, err = _serve(data_dir, f"unix:{path}")
    assert code == 2 and "already listening" in err, err[-500:]


def test_a_free_address_or_a_stale_socket_file_is_no_problem(tmp_path: Path) -> None:
    assert bind_problem(f"127.0.0.1:{free_port()}") is None
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # bound, never listening, then closed: the file stays behind
    assert stale.exists() and bind_problem(f"unix:{stale}") is None
