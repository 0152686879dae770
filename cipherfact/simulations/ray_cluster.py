"""Joining a Ray cluster (``--ray-address``) with errors a user can act on.

``ray.init(address=...)`` answers a refused token, a wrong port and a dead
head alike, with ``ConnectionError: Failed to connect to Ray cluster`` after
half a minute and a traceback. ``connect`` checks first, in about a second,
and raises ``RayClusterError`` with one line that says what is wrong and what
to do:

- the address is malformed, or ``auto`` finds no cluster on this machine;
- nothing listens at HOST:PORT;
- the cluster wants a token and this driver sent none (``RAY_AUTH_MODE`` is
  not ``token``), or sent one it refuses, or ``RAY_AUTH_MODE=token`` is set
  but no token is to be found;
- anything else ``ray.init`` raises (a version mismatch, ...), first line only.

Token authentication (Ray's default for clusters it starts itself): every
process that talks to the cluster (worker nodes' ``ray start --address``,
drivers) needs ``RAY_AUTH_MODE=token`` and the head's token, from
``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``, in that order. Ray turns token mode on by itself only
for ``auto`` and only when a token file exists; an explicit address never
sends a token unless ``RAY_AUTH_MODE=token`` says so. The token itself is
never printed or logged here; messages name only where it came from.

Commands for a cluster: README.md ("Running on Ray") and docs/ray-cluster.md.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

CONNECT_TIMEOUT_S = 5.0  # TCP check of HOST:PORT
GCS_PROBE_TIMEOUT_S = 10.0  # one authenticated request to the head's GCS

TOKEN_HELP = "`ray get-auth-token` on the head prints the cluster's token; see docs/ray-cluster.md"


class RayClusterError(ConnectionError, ValueError):
    """This driver could not join the Ray cluster; one line that says why.

    A ``ValueError`` too, so ``cipherfact``'s command line prints it as
    ``error: ...`` without a traceback, like any other bad input.
    """


class _NeverRaisedError(Exception):
    """Matches nothing in an ``except`` clause."""


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts; anything else is refused."""
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise RayClusterError(
            f"--ray-address {address!r} is not HOST:PORT (the head's GCS port, 6379 unless "
            "`ray start --head --port` said otherwise) or 'auto'"
        )
    return host, int(port)


def resolve_address(address: str) -> str:
    """The ``HOST:PORT`` that ``ray.init(address=address)`` will dial (``auto`` and
    ``RAY_ADDRESS`` resolved the way Ray resolves them)."""
    if address != "auto" and not os.environ.get("RAY_ADDRESS"):
        split_address(address)
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # pragma: no cover - a Ray without this helper: let ray.init say
        return address
    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError as exc:
        raise RayClusterError(
            f"--ray-address {address}: no Ray cluster is running on this machine "
            "(start one with `ray start --head`, or give the head's HOST:PORT)"
        ) from exc
    except ValueError as exc:
        raise RayClusterError(f"--ray-address {address}: {_first_line(exc)}") from exc
    if resolved is None:  # pragma: no cover - only for None or "local"
        raise RayClusterError(f"--ray-address {address}: no Ray cluster to join")
    split_address(resolved)
    return str(resolved)


def check_listening(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Something accepts TCP connections at ``address``, or a one-line error."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.gaierror as exc:
        raise RayClusterError(
            f"cannot join the Ray cluster at {address}: host {host!r} does not resolve "
            f"({exc.strerror or exc})"
        ) from exc
    except TimeoutError as exc:
        raise RayClusterError(
            f"cannot join the Ray cluster at {address}: no answer within {timeout:g} s "
            "(a firewall, or the wrong host?)"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayClusterError(
            f"cannot join the Ray cluster at {address}: nothing listens there ({reason}); "
            "start the head with `ray start --head --port=PORT` and pass its HOST:PORT"
        ) from exc


def token_source() -> str:
    """Where this process would read its token from (never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}"
    return "~/.ray/auth_token"


def _raylet() -> Any:
    """Ray's compiled core (untyped; what it offers depends on the Ray version)."""
    try:
        return importlib.import_module("ray._raylet")
    except ImportError:  # pragma: no cover - no Ray: ray.init reports that
        return None


def _auth() -> tuple[bool, bool] | None:
    """(token mode on, a token is available), or None for a Ray without token auth."""
    raylet = _raylet()
    needed = ("AuthenticationMode", "AuthenticationTokenLoader", "get_authentication_mode")
    if raylet is None or not all(hasattr(raylet, n) for n in needed):
        return None  # pragma: no cover - Ray before token authentication
    token_mode = raylet.get_authentication_mode() == raylet.AuthenticationMode.TOKEN
    loader = raylet.AuthenticationTokenLoader.instance()
    return token_mode, bool(loader.has_token(ignore_auth_mode=True))


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hide what Ray's C++ client writes to fd 2 while it probes (a warning per failed
    attempt, which would bury the one line this module prints)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedded interpreter): leave it
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def refused_message(address: str, token_mode: bool) -> str:
    """The one line for a cluster that answered 'InvalidAuthToken'."""
    if not token_mode:
        return (
            f"the Ray cluster at {address} requires an authentication token and this driver "
            "sent none: export RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, "
            f"RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); {TOKEN_HELP}"
        )
    return (
        f"the Ray cluster at {address} refused this driver's authentication token (read "
        f"from {token_source()}): it is not the head's token; {TOKEN_HELP}"
    )


def probe(address: str, timeout: float = GCS_PROBE_TIMEOUT_S) -> None:
    """One request to the head's GCS with this process's credentials; a refusal or
    silence becomes a ``RayClusterError``."""
    raylet = _raylet()
    if raylet is None or not hasattr(raylet, "GcsClient"):  # pragma: no cover
        return  # let ray.init report it
    refused = getattr(importlib.import_module("ray.exceptions"), "AuthenticationError", None)
    refused = refused or _NeverRaisedError  # a Ray without token auth refuses no token
    auth = _auth()
    if auth is not None and auth[0] and not auth[1]:
        raise RayClusterError(
            "RAY_AUTH_MODE=token but this driver has no token: set RAY_AUTH_TOKEN, or "
            f"RAY_AUTH_TOKEN_PATH, or write ~/.ray/auth_token; {TOKEN_HELP}"
        )
    try:
        with _quiet_stderr():
            client = raylet.GcsClient(address=address)
            client.internal_kv_get(b"cipherfact-probe", None, timeout=timeout)
    except refused as exc:
        raise RayClusterError(refused_message(address, bool(auth and auth[0]))) from exc
    except Exception as exc:
        raise RayClusterError(
            f"cannot join the Ray cluster at {address}: it did not answer as a Ray head "
            f"({_first_line(exc)}); is that the port of `ray start --head --port`?"
        ) from exc


def _auto_token_mode(address: str) -> None:
    """What ``ray.init`` does for ``auto`` before it connects: token mode on when
    RAY_AUTH_MODE is unset and a token file exists (an explicit address never)."""
    if address != "auto":
        return
    with contextlib.suppress(ImportError):
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def connect(address: str, **init_kwargs: Any) -> None:
    """``ray.init(address=address, ...)`` after checking that it can work.

    Raises ``RayClusterError`` (one line) when the address is malformed, nothing
    listens there, the cluster refuses this driver's token or wants one it did
    not send, or ``ray.init`` fails for any other reason.
    """
    import ray

    target = resolve_address(address)
    check_listening(target)
    _auto_token_mode(address)
    probe(target)
    try:
        ray.init(address=address, **{"log_to_driver": False, **init_kwargs})
    except Exception as exc:
        with contextlib.suppress(Exception):
            if ray.is_initialized():
                ray.shutdown()
        raise RayClusterError(
            f"cannot join the Ray cluster at {target}: {_first_line(exc)}"
        ) from exc
