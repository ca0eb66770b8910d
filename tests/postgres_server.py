"""A throw-away PostgreSQL server on a free loopback port, in a temporary data directory: the sweep tests' and
``bench/sweep_load.py``'s database (Debian's postgresql package; run as the postgres account under root)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def postgres_bin(name: str) -> str | None:
    """The server binary ``name`` (initdb, pg_ctl) on PATH or in Debian's versioned folder, or None."""
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


@contextlib.contextmanager
def postgres_server(initdb: str, pg_ctl: str) -> Iterator[str]:
    """Start a server, yield its URL, stop it (immediately) and remove its data."""
    root = Path(tempfile.mkdtemp(prefix="trainrecon-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres account
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run(as_user + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True)
    subprocess.run(as_user + [pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
                              f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
