"""A throwaway PostgreSQL server on loopback for the multi-worker tuning tests.

Uses Debian's postgresql package (`.ci/run` installs it when missing). initdb refuses to run as
root, so as root the server runs as the `postgres` user in a folder it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_bin(name: str) -> str:
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    if not hits:
        raise PostgresUnavailable(f"{name} not found: install Debian's postgresql package (apt-get install postgresql)")
    return hits[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable("running as root but there is no 'postgres' user to run the server") from exc
    return ["runuser", "-u", "postgres", "--", *cmd]


class PostgresServer:
    """start() -> URL; stop() removes everything."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="comp-pg-"))
        self.port = free_port()
        self.pg_ctl = find_bin("pg_ctl")
        self.initdb = find_bin("initdb")

    def run(self, cmd: list[str]) -> None:
        done = subprocess.run(as_server_user(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise PostgresUnavailable(f"{' '.join(cmd[:2])} failed: {done.stderr.strip()} {log[-800:]}")

    def start(self) -> str:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.run([self.initdb, "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=50 -c fsync=off"
        self.run([self.pg_ctl, "-D", str(self.dir / "data"), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"])
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self.run([self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])
        except PostgresUnavailable:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
