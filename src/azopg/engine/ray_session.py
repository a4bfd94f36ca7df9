"""Connecting to Ray: a private local instance on 127.0.0.1, or a cluster's address.

Without an address, :func:`connect` starts a private Ray instance on this machine (no
dashboard, a small object store, every listener on 127.0.0.1, Ray's own log lines kept
out of the terminal). With ``address="HOST:PORT"`` it joins a cluster started with
``ray start --head``, after checking in one line that something listens there.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import SettingsError

__all__ = ["AUTH_MODE_ENV", "CONNECT_TIMEOUT", "CPU_QUANTUM", "LOCAL_OBJECT_STORE", "LOOPBACK_ENV", "actor_cpus",
           "connect", "first_line", "import_ray", "ray_session"]

#: Seconds to wait for a TCP connection to a cluster's address before giving up.
CONNECT_TIMEOUT = 5.0
#: Object store of a private local instance, bytes (tasks and reports are a few hundred bytes).
LOCAL_OBJECT_STORE = 100 * 1024**2
#: Ray's switch that makes every listener of an instance started here bind to 127.0.0.1;
#: read once, when Ray is first imported.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Ray's authentication mode switch (``token`` or ``disabled``).
AUTH_MODE_ENV = "RAY_AUTH_MODE"
#: Resolution of Ray's resource quantities (a fractional CPU is rounded down to it).
CPU_QUANTUM = 1e-4

def actor_cpus(node_cpus: Iterable[float], workers: int) -> float:
    """CPUs each of ``workers`` actors asks for: one while the nodes have room, else the
    largest share with which all of them fit the nodes (``node_cpus``: the CPUs of each)
    at once -- many workers that mostly wait (a slow plant) still all get scheduled.

    Shares are rounded down to :data:`CPU_QUANTUM` (Ray's resolution), so that ``k`` actors
    of ``c / k`` CPUs really fit a node of ``c``.
    """
    cpus = [float(c) for c in node_cpus if c > 0]
    if not cpus:
        return CPU_QUANTUM
    for x in sorted({min(1.0, c / k) for c in cpus for k in range(1, workers + 1)}, reverse=True):
        x = max(math.floor(x / CPU_QUANTUM) * CPU_QUANTUM, CPU_QUANTUM)
        if sum(math.floor(c / x + 1e-9) for c in cpus) >= workers:
            return x
    return CPU_QUANTUM


def import_ray(address: str | None = None) -> Any:
    """Import Ray, or raise :class:`SettingsError` with the install hint.

    For a private local instance (no ``address``) or a cluster on this machine's loopback
    interface, Ray is told before its first import to keep every address on 127.0.0.1
    (else it swaps 127.0.0.1 for the machine's outward address).
    """
    loopback = address is None or _is_loopback(address)
    if loopback:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # for Ray's processes, and Ray if not yet imported
    try:
        import ray
    except ImportError:
        raise SettingsError("the ray backend needs Ray: pip install 'azopg[ray]'") from None
    if loopback and os.environ.get(LOOPBACK_ENV) == "0":
        # Ray read the switch when it was first imported (perhaps before us): apply it now
        with contextlib.suppress(Exception):
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def _host_port(address: str) -> tuple[str, int | None]:
    text = address.split("://", 1)[-1]
    host, _, port = text.rpartition(":")
    if not host:
        return text, None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return text, None


def _is_loopback(address: str) -> bool:
    host, _ = _host_port(address)
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _check_reachable(address: str) -> None:
    """Fail fast, in one line, if nothing listens at ``HOST:PORT`` (Ray itself retries for minutes)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, port = _host_port(address)
    if port is None:
        raise SettingsError(f"cannot join the Ray cluster at {address!r}: expected HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise SettingsError(f"cannot join the Ray cluster at {address!r}: "
                            f"{exc.strerror or type(exc).__name__} (is `ray start --head` running there?)") from None


def connect(address: str | None = None, workers: int = 1) -> Any:
    """Start a private local Ray instance (``address=None``) or join the cluster at ``address``.

    The local instance counts ``max(CPUs, workers)`` CPUs: every worker gets one, as worker
    processes do (Ray otherwise warns about starting more workers than CPUs).

    The local instance is quiet: no dashboard, a small object store, listeners on
    127.0.0.1 only, the workers' output and Ray's log lines kept out of the terminal. The
    caller's SIGINT and SIGTERM handlers are kept (``ray.init`` installs its own).

    Raises
    ------
    SettingsError
        If Ray is missing, or the instance cannot be started or the cluster reached.
    """
    ray = import_ray(address)
    if address is not None:
        _check_reachable(address)
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if address is None:
        cpus = max(os.cpu_count() or 1, workers)
        kwargs.update(address="local", num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE,
                      # no idle workers started ahead (each costs CPU while it waits; actors start their own),
                      # and time for W actors to start on a loaded machine (Ray's default: 60 s)
                      _system_config={"worker_maximum_startup_concurrency": cpus, "enable_worker_prestart": False,
                                      "prestart_worker_first_driver": False, "worker_register_timeout_seconds": 300},
                      _node_ip_address="127.0.0.1")
    else:
        kwargs.update(address=address)
        if _is_loopback(address):
            kwargs.update(_node_ip_address="127.0.0.1")
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    noise = ""
    try:
        with _quiet_logger("ray"), _captured_stderr() as captured:
            try:
                ray.init(**kwargs)
            finally:
                noise = captured()
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        where = f"join the Ray cluster at {address!r}" if address else "start a local Ray instance"
        hint = ""
        if "Authentication" in noise or "auth" in str(exc).lower():
            hint = (f" (the cluster wants token authentication: set {AUTH_MODE_ENV}=token, with the head's token in "
                    "~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise SettingsError(f"cannot {where}: {first_line(exc)}{hint}") from None
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int = 1) -> Iterator[Any]:
    """Ray connected for the block (several runs share it); shut down at its end if started here."""
    ray = import_ray(address)
    started = not ray.is_initialized()
    if started:
        connect(address, workers)
    try:
        yield ray
    finally:
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Send file descriptor 2 to a temporary file for the block (Ray's core prints its
    connection retries there); yields a function returning what was captured."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)

        def text() -> str:
            sys.stderr.flush()
            tmp.seek(0)
            return tmp.read().decode(errors="replace")

        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from the Python logger ``name`` for the block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
