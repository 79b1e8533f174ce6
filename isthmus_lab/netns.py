"""Network namespaces, veth links, bridges and the processes started inside them.

Owns one `Lab`: the namespaces it created (all named `<prefix><short>`, the prefix
`ism<6 hex>-` unique per run), the processes it started (by PID), and a working
directory for configs, logs and captures.

Rules: `close()` ends only the processes this lab started, by PID (SIGTERM, then SIGKILL
after a timeout), deletes only this lab's namespaces, is idempotent and works after a
partial setup. Everything goes through `ip`, `sysctl` and friends as subprocesses; this
module imports neither `controller` nor `edge`.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

PREFIX_STEM = "ism"
_PR_SET_PDEATHSIG = 1


class LabError(RuntimeError):
    """A lab command failed or a wait timed out; the message names the command or condition."""


def new_prefix() -> str:
    """A namespace-name prefix unique per run: `ism<6 hex>-`."""
    return f"{PREFIX_STEM}{secrets.token_hex(3)}-"


def host_problems() -> list[str]:
    """What keeps this machine from running a lab (empty when it can)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("not running as root: the lab creates network namespaces and TUN devices")
    for tool in ("ip", "sysctl", "tcpdump", "ping"):
        if shutil.which(tool) is None:
            problems.append(f"'{tool}' is not installed (scripts/setup.sh installs it)")
    if shutil.which("ip") is not None:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            problems.append(f"'ip netns' is unavailable: {done.stderr.strip() or done.returncode}")
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as e:
        problems.append(f"/dev/net/tun cannot be opened: {e.strerror}")
    return problems


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the lab process dies without closing,
    # the kernel SIGKILLs what it started (the flag survives the exec of `ip netns exec`).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """A background process the lab started in a namespace; signalled only by its PID."""

    def __init__(
        self, ns: str, argv: Sequence[str], log_path: Path, popen: subprocess.Popen[bytes]
    ) -> None:
        self.ns = ns
        self.argv = tuple(argv)
        self.log_path = log_path
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` if the process has not been reaped (Popen checks, so no PID reuse)."""
        if self._popen.poll() is None:
            self._popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Raises: LabError when it is still running after `timeout` seconds."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self} still running after {timeout:.1f} s") from None

    def kill(self) -> int:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        return self._popen.wait()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        self.signal(signal.SIGTERM)
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def __str__(self) -> str:
        return f"pid {self.pid} in {self.ns}: {' '.join(self.argv)}"


class Lab:
    """Network namespaces and processes for one run; a context manager that always cleans up."""

    def __init__(self, workdir: Path | None = None, prefix: str | None = None) -> None:
        self.prefix = prefix or new_prefix()
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="isthmus-lab-")) if workdir is None else workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep_dir = False
        self._namespaces: list[str] = []
        self._processes: list[Process] = []
        self._closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(self._namespaces)

    @property
    def processes(self) -> tuple[Process, ...]:
        return tuple(self._processes)

    # -- building ---------------------------------------------------------------------------

    def add_netns(self, short: str) -> str:
        """Create namespace `<prefix><short>` with lo up; returns its full name."""
        self._check_open()
        name = self.prefix + short
        host_run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def ip(self, ns: str, *args: str) -> str:
        """Run `ip -n NS ARGS...`; returns stdout."""
        return host_run(["ip", "-n", ns, *args]).stdout

    def add_bridge(self, ns: str, name: str) -> None:
        self.ip(ns, "link", "add", name, "type", "bridge")
        self.ip(ns, "link", "set", name, "up")

    def add_veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair from `if_a` in `ns_a` to `if_b` in `ns_b`, both ends up."""
        self.ip(ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        self.ip(ns_a, "link", "set", if_a, "up")
        self.ip(ns_b, "link", "set", if_b, "up")

    def set_master(self, ns: str, ifname: str, bridge: str) -> None:
        self.ip(ns, "link", "set", ifname, "master", bridge)

    def add_address(self, ns: str, ifname: str, cidr: str) -> None:
        self.ip(ns, "address", "add", cidr, "dev", ifname)

    def add_route(
        self, ns: str, dst: str, *, via: str | None = None, dev: str | None = None
    ) -> None:
        args = ["route", "add", dst]
        if via is not None:
            args += ["via", via]
        if dev is not None:
            args += ["dev", dev]
        self.ip(ns, *args)

    def sysctl(self, ns: str, settings: Mapping[str, str | int]) -> None:
        """Set sysctls inside `ns` (e.g. {"net.ipv4.ip_forward": 1})."""
        pairs = [f"{key}={value}" for key, value in settings.items()]
        self.run(ns, ["sysctl", "-q", "-w", *pairs])

    def nft(self, ns: str, ruleset: str) -> None:
        """Load an nftables ruleset (the text `nft -f` reads) inside `ns`."""
        self.run(ns, ["nft", "-f", "-"], input=ruleset)

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        ns: str,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `ns` and wait for it.

        Raises:
            LabError: it timed out, or (with `check`) exited non-zero; names the command and
                quotes its stderr.
        """
        self._check_open()
        return host_run(
            ["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=input
        )

    def spawn(
        self,
        ns: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        stdout_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        """Start `argv` inside `ns` in the background; stderr (and stdout unless
        `stdout_path` is given) is appended to `log_path`. The lab tracks its PID."""
        self._check_open()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "ab") as log:
            out = open(stdout_path, "wb") if stdout_path is not None else log  # noqa: SIM115
            try:
                popen = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=log,
                    env=full_env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            finally:
                if out is not log:
                    out.close()
        process = Process(ns, argv, log_path, popen)
        self._processes.append(process)
        return process

    # -- cleanup ----------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """End this lab's processes, delete its namespaces and (unless `keep_dir` or the
        directory was given) its directory. Never raises; problems go to stderr."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            try:
                process.signal(signal.SIGTERM)
            except OSError as e:
                _warn(f"cannot signal {process}: {e}")
        deadline = time.monotonic() + timeout
        for process in self._processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except LabError:
                _warn(f"{process} ignored SIGTERM for {timeout:.0f} s; sending SIGKILL")
                process.kill()
        for name in reversed(self._namespaces):
            done = subprocess.run(
                ["ip", "netns", "delete", name], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                _warn(f"cannot delete namespace {name}: {done.stderr.strip()}")
        self._namespaces.clear()
        if self._own_dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise LabError("the lab is closed")


def host_run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in the caller's namespace (see `Lab.run` for the errors)."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise LabError(f"'{' '.join(argv)}' did not finish within {timeout:.1f} s") from None
    if check and done.returncode != 0:
        raise LabError(
            f"'{' '.join(argv)}' exited {done.returncode}: {done.stderr.strip() or '(no stderr)'}"
        )
    return done


def _warn(text: str) -> None:
    print(f"lab: {text}", file=sys.stderr)
