"""A small network of "hosts" on this machine for the multi-host tests: Linux network namespaces on a bridge.

`NetLab` makes a switch namespace holding a bridge, and one namespace per host, each joined to the bridge by a
veth pair and given its own address in 10.213.0.0/24 (private, and only inside namespaces the lab made: the
machine's own network is never touched). Everything is removed on exit, even after a failure: deleting a
namespace deletes its end of every veth pair, and the lab kills whatever still runs in its namespaces first.

`in_host(name, factory)` runs an asyncio program in a thread that entered a host's namespace (setns(2) acts on
the calling thread only), so the test's clients are on a host of the lab while the test itself is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

SUBNET = "10.213.0"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "multi-host tests need root to create network namespaces (ip netns add); run them as root"
    if shutil.which("ip") is None:
        return "multi-host tests need iproute2's `ip` command (apt-get install -y iproute2)"
    probe = f"ttprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


@dataclass
class Host:
    name: str  # the label the test uses ("db", "h1", ...)
    netns: str  # the namespace's name (unique to this run)
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pids(self) -> list[int]:
        """Every process running in this host's namespace."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


class NetLab:
    """Hosts in network namespaces on one bridge (see the module docstring)."""

    def __init__(self, names: list[str]) -> None:
        tag = f"{os.getpid() % 100000}"
        self.switch = f"tt{tag}sw"
        self.hosts = {name: Host(name, f"tt{tag}{name}", f"{SUBNET}.{i + 1}") for i, name in enumerate(names)}
        self._made: list[str] = []

    @property
    def network(self) -> str:
        return f"{SUBNET}.0/24"

    def __enter__(self) -> NetLab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts.values()):
            _ip("netns", "add", host.netns)
            self._made.append(host.netns)
            port = f"p{i}"
            _ip(
                "-n",
                self.switch,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            )
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")

    def spawn(
        self, host: str, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a command on a host (`ip netns exec`), its output to `log`."""
        h = self.hosts[host]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", h.netns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        h.processes.append(proc)
        return proc

    def kill_host(self, host: str) -> list[int]:
        """The host dies: every process in its namespace is SIGKILLed, then its link goes down (nothing
        reaches its address any more). Returns the pids killed."""
        h = self.hosts[host]
        killed = h.pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _ip("-n", h.netns, "link", "set", "eth0", "down")
        for proc in h.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        return killed

    def stop_host(self, host: str, timeout: float = 15.0) -> None:
        """Stop a host's processes politely (SIGTERM, then SIGKILL after `timeout`)."""
        h = self.hosts[host]
        for proc in h.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in h.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def close(self) -> None:
        """Kill what still runs in the lab's namespaces and delete them (veths and bridge go with them)."""
        for host in self.hosts.values():
            if host.netns not in self._made:
                continue
            for pid in host.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for proc in host.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._made.clear()

    def in_host(self, host: str, factory: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
        """Run `asyncio.run(factory())` in a thread inside the host's namespace; its result or its error."""
        netns = self.hosts[host].netns
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                enter_netns(netns)
                outcome["value"] = asyncio.run(factory())  # type: ignore[arg-type]
            except BaseException as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=target, name=f"in-{host}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the program on {host} did not finish within {timeout:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]  # type: ignore[no-any-return]


def enter_netns(netns: str) -> None:
    """Move the calling thread into a network namespace (sockets it makes from now on live there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def lab_or_skip(names: list[str]) -> Iterator[NetLab]:
    """A NetLab of these hosts; the test is skipped, with the reason, where namespaces cannot be made."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with NetLab(names) as lab:
        yield lab


def wait_for_line(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until `needle` appears in a process's log; fail with the log's tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if needle in text:
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before {needle!r}:\n{text[-3000:]}")
        time.sleep(0.1)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(f"no {needle!r} within {timeout:g} s:\n{text[-3000:]}")
