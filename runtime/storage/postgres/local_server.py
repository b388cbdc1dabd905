"""Storage layer (PostgreSQL): a throwaway local server in a temporary folder, for tests and benchmarks.

The server listens on a unix socket only (no TCP port, so parallel runs never collide), and is started with
the Debian package's binaries (`/usr/lib/postgresql/<version>/bin`, or `initdb` / `pg_ctl` on PATH).
PostgreSQL refuses to run as root: as root, the folder is handed to the `postgres` user (which the Debian
package creates) and every command runs as that user through `runuser`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

PORT = 5432  # names the socket file (.s.PGSQL.5432) in the server's own folder; no TCP port is opened


class ServerUnavailable(RuntimeError):
    """PostgreSQL's binaries are missing, or the server could not be started (the message says why)."""


def find_bindir() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: the newest Debian version, else the one on PATH; None if none."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    return None


class LocalServer:
    """A PostgreSQL server of its own, in a temporary folder; `start()`, then `dsn(database)`, then `stop()`.

    `fsync=False` suits tests (a crash of the machine loses the throwaway data anyway); benchmarks keep the
    default so commits cost what they cost in production."""

    def __init__(
        self,
        *,
        fsync: bool = True,
        max_connections: int = 200,
        listen: str = "",
        trust_network: str | None = None,
        netns: str | None = None,
    ) -> None:
        """`listen`: a TCP address to listen on besides the unix socket (default none); `trust_network`: a
        CIDR whose TCP clients are let in without a password (a test network of its own, never a real
        one); `netns`: run the server inside this network namespace (`ip netns exec`), where `listen` is."""
        self.fsync = fsync
        self.max_connections = max_connections
        if trust_network is not None:
            ipaddress.ip_network(trust_network)  # ValueError for anything but a CIDR
        self.listen, self.trust_network, self.netns = listen, trust_network, netns
        self.root: Path | None = None
        self._bindir: Path | None = None
        self._user: str | None = None  # the user the server runs as, when we are root
        self._options = ""

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "sock"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not started"
        return self.root / "data"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq-style URL for the database, over the server's unix socket."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={PORT}"

    def tcp_dsn(self, database: str = "postgres") -> str:
        """A URL for the database over TCP at the `listen` address (from inside its network)."""
        if not self.listen:
            raise ValueError("this server listens on its unix socket only (no `listen` address)")
        return f"postgresql://postgres@{self.listen}:{PORT}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise ServerUnavailable(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def start(self) -> LocalServer:
        """initdb and start the server; ServerUnavailable with the reason when it cannot."""
        bindir = find_bindir()
        if bindir is None:
            raise ServerUnavailable(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on PATH); "
                "install it with: apt-get update && apt-get install -y postgresql"
            )
        self._bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ttgen-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable(
                    "running as root, and there is no 'postgres' user to run the server as "
                    "(the Debian postgresql package creates it)"
                ) from None
            self._user = "postgres"
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._run(
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self._run("mkdir", str(self.socket_dir))
        if self.trust_network is not None:
            hba = self.data_dir / "pg_hba.conf"
            with hba.open("a", encoding="utf-8") as fh:
                fh.write(f"host all all {self.trust_network} trust\n")
        options = (
            f"-k {self.socket_dir} -p {PORT} -c listen_addresses='{self.listen}' "
            f"-c max_connections={self.max_connections}"
            + ("" if self.fsync else " -c fsync=off -c full_page_writes=off")
        )
        self._options = options
        proc = self._pg_ctl_start(check=False)
        if proc.returncode != 0:
            log = (
                (self.root / "log").read_text(errors="replace")[-2000:]
                if (self.root / "log").exists()
                else ""
            )
            self.stop()
            raise ServerUnavailable(f"pg_ctl start failed: {proc.stderr.strip()} {log}")
        return self

    def restart_stopped(self) -> None:
        """Start the server again after `halt()` (same folder, same data)."""
        self._pg_ctl_start(check=True)

    def _pg_ctl_start(self, *, check: bool) -> subprocess.CompletedProcess[str]:
        """`pg_ctl start` of this server's data folder with its options, waiting up to 60 s."""
        assert self._bindir is not None and self.root is not None
        pg_ctl = str(self._bindir / "pg_ctl")
        log = str(self.root / "log")
        return self._run(
            pg_ctl,
            "-D",
            str(self.data_dir),
            "-l",
            log,
            "-w",
            "-t",
            "60",
            "-o",
            self._options,
            "start",
            check=check,
        )

    def halt(self, mode: str = "immediate") -> None:
        """Stop the server but keep its data (`restart_stopped` brings it back); `immediate` is a crash."""
        assert self._bindir is not None
        self._run(str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if self.root is None:
            return
        if self._bindir is not None and (self.data_dir / "postmaster.pid").exists():
            self._run(
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "stop",
                check=False,
            )
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
        self.root = None


async def create_database(admin_dsn: str, name: str) -> str:
    """Create an empty database on the server of `admin_dsn` and return its DSN (benchmarks, tools)."""
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    if not name.isidentifier():
        raise ValueError(f"database name must be an identifier, not {name!r}")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # checked identifier: names cannot be bound
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
