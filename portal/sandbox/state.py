"""Keep the sandbox's AWS state across restarts: a snapshot of moto's backends on disk.

moto keeps every service's state in module-level ``BackendDict`` objects, one backend per
account and region. `capture()` pickles every backend that has been used (with the
pipeline stand-in's counts and queued deliveries) in one pickle, so references between
them survive; `restore()` puts the backends back into the live ``BackendDict`` objects
before the server answers its first call. Ids stay what they were (KMS key ids, secret
ARNs, assumed-role access keys), which replaying moto's request recording would not do.

A few things moto holds do not pickle; `_Pickler` reduces them: locks (new ones on load),
``WeakValueDictionary`` (the Lambda backend's ARN index; its values are kept strongly
elsewhere in the same pickle), ``defaultdict(lambda: {})`` (Lambda aliases), and the
private keys of KMS keys (as PKCS#8 PEM).

`StateStore` saves under a folder (``settings.SANDBOX_STATE_DIR``): on a timer when
something changed, and on a clean stop, writing a temporary file and renaming it, so a
SIGKILL loses at most one interval. A file it cannot read is renamed aside with a clear
log line, and the sandbox starts empty (and is seeded).

`GATE` orders snapshots against calls: every call the sandbox serves, and every change the
pipeline stand-in makes to moto directly, holds it shared; a snapshot holds it exclusively,
so it never sees a backend half-changed. The pickle is the sandbox's own file under the
var folder, trusted as the SQLite database next to it is.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import pickle
import sys
import threading
import time
import typing
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "state.pickle"
FORMAT = 1


class Gate:
    """A readers-writer lock that prefers the writer: calls share it, a snapshot owns it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


GATE = Gate()
_changes = 0
_changes_lock = threading.Lock()


def mark_changed() -> None:
    """Note that the sandbox's state may have changed (the next timed save writes it)."""
    global _changes
    with _changes_lock:
        _changes += 1


def changes() -> int:
    with _changes_lock:
        return _changes


# --- pickling moto's backends --------------------------------------------------------------

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _new_lock(kind: str) -> Any:
    return threading.RLock() if kind == "rlock" else threading.Lock()


def _weak_values(items: dict[Any, Any]) -> weakref.WeakValueDictionary[Any, Any]:
    return weakref.WeakValueDictionary(items)


def _default_dict(kind: type, items: dict[Any, Any]) -> defaultdict[Any, Any]:
    return defaultdict(kind, items)


def _local_factory_kind(factory: Any) -> type | None:
    """What a defaultdict's unpicklable factory (``lambda: {}``) makes, when it is an empty
    builtin container or number; None otherwise."""
    if factory is None or "<" not in getattr(factory, "__qualname__", "<"):
        return None
    sample = factory()
    kind = type(sample)
    return kind if kind in (dict, list, set, int, float, str) and sample == kind() else None


def _private_key(pem: bytes) -> Any:
    # import here: cryptography is moto's dependency, needed only when a key is restored
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(pem, password=None)


def _live_backend_dict(module: str, cls: str) -> Any:
    return _backend_dicts_by_class()[(module, cls)]


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        # import here: moto and cryptography load only in the sandbox server process
        from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
        from moto.core.base_backend import BackendDict

        self._backend_dict = BackendDict
        self._private_keys = tuple(typing.get_args(PrivateKeyTypes))

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES):
            return _new_lock, ("rlock" if isinstance(obj, _LOCK_TYPES[1]) else "lock",)
        if isinstance(obj, defaultdict):
            kind = _local_factory_kind(obj.default_factory)
            return NotImplemented if kind is None else (_default_dict, (kind, dict(obj)))
        if isinstance(obj, weakref.WeakValueDictionary):
            return _weak_values, (dict(obj.items()),)
        if isinstance(obj, self._backend_dict):
            # A backend that holds a service's BackendDict gets the live one back.
            return _live_backend_dict, (obj.backend.__module__, obj.backend.__qualname__)
        if isinstance(obj, self._private_keys):
            return _private_key, (_pem(obj),)
        return NotImplemented


def _pem(key: Any) -> bytes:
    # import here: cryptography is moto's dependency, needed only when a key is saved
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def _backend_dicts_by_class() -> dict[tuple[str, str], Any]:
    """Every BackendDict of the moto services this process has imported, by backend class."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.core.base_backend import BackendDict

    found: dict[tuple[str, str], Any] = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("moto.") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, BackendDict):
                found[(value.backend.__module__, value.backend.__qualname__)] = value
    for value in _used_backend_dicts():
        found[(value.backend.__module__, value.backend.__qualname__)] = value
    return found


def _used_backend_dicts() -> list[Any]:
    """The BackendDicts moto has handed out a backend of since its last reset."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.core.base_backend import BackendDict

    return list(BackendDict._instances)  # type: ignore[misc] # a generic class attribute


def capture(extras: dict[str, Any] | None = None) -> bytes:
    """Every used moto backend (and `extras`) as one pickle. Hold GATE exclusively."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    import moto

    backends: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for backend_dict in _used_backend_dicts():
        key = (backend_dict.backend.__module__, backend_dict.backend.__qualname__)
        accounts = {
            account: dict(regions.items()) for account, regions in backend_dict.items() if regions
        }
        if accounts:
            backends[key] = accounts
    state = {
        "format": FORMAT,
        "moto": moto.__version__,
        "saved_at": time.time(),
        "backends": backends,
        "extras": extras or {},
    }
    buffer = io.BytesIO()
    _Pickler(buffer).dump(state)
    return buffer.getvalue()


class StateUnreadable(Exception):
    """The saved state cannot be used (corrupt, truncated, or from another moto)."""


def parse(data: bytes) -> dict[str, Any]:
    """The saved state in `data`, checked; StateUnreadable when it cannot be used."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    import moto

    try:
        state = pickle.loads(data)  # noqa: S301 - the sandbox's own file under var/
    except Exception as exc:  # any of a dozen errors a damaged pickle raises
        raise StateUnreadable(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StateUnreadable("not a sandbox state file of this version")
    if state.get("moto") != moto.__version__:
        raise StateUnreadable(f"saved by moto {state.get('moto')}, this is moto {moto.__version__}")
    return state


def restore(state: dict[str, Any]) -> int:
    """Put the saved backends into moto's live BackendDicts; how many backends."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.core.base_backend import BackendDict

    BackendDict.reset()
    live = _backend_dicts_by_class()
    count = 0
    for (module, cls), accounts in state["backends"].items():
        if (module, cls) not in live:
            importlib.import_module(module)
            live = _backend_dicts_by_class()
        backend_dict = live[(module, cls)]
        for account, regions in accounts.items():
            account_backends = backend_dict[account]  # creates it and registers the dict
            for region, backend in regions.items():
                dict.__setitem__(account_backends, region, backend)
                count += 1
    return count


# --- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """What `StateStore.load` found: restored, nothing saved, or a file set aside."""

    outcome: str  # restored | empty | set-aside
    backends: int = 0
    extras: dict[str, Any] | None = None
    seconds: float = 0.0
    size: int = 0
    aside: Path | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.outcome == "restored":
            return (
                f"sandbox state restored: {self.backends} backends, "
                f"{self.size / 1024:.0f} KiB in {self.seconds:.2f}s"
            )
        if self.outcome == "set-aside":
            return (
                f"sandbox state could not be read ({self.problem}); "
                f"kept aside as {self.aside}, starting from a fresh seed"
            )
        return "sandbox state: nothing saved yet, starting from a fresh seed"


class StateStore:
    """Saves the sandbox state to `directory` and restores it from there."""

    def __init__(
        self, directory: Path, *, interval: float, extras: Any = None, gate: Gate = GATE
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.interval = interval
        self.extras = extras  # a callable returning the stand-ins' state, or None
        self.gate = gate
        self.saves = 0
        self.last_save_seconds = 0.0
        self.last_size = 0
        self._saved_changes: int | None = None
        self._save_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def reset(self) -> bool:
        """Delete the saved state; whether there was any."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def load(self) -> Loaded:
        """Restore the saved state into moto, or set an unreadable file aside."""
        started = time.monotonic()
        for partial in self.directory.glob(f".{STATE_FILE}.*.tmp"):  # a save cut off by SIGKILL
            partial.unlink(missing_ok=True)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded("empty")
        except OSError as exc:
            return self._set_aside(f"{type(exc).__name__}: {exc}")
        try:
            state = parse(data)
            with self.gate.exclusive():
                backends = restore(state)
        except StateUnreadable as exc:
            return self._set_aside(str(exc))
        except Exception as exc:  # a restore that broke half-way: start clean
            self._clear_backends()
            return self._set_aside(f"{type(exc).__name__}: {exc}")
        self._saved_changes = changes()
        return Loaded(
            "restored",
            backends=backends,
            extras=dict(state.get("extras") or {}),
            seconds=time.monotonic() - started,
            size=len(data),
        )

    def _clear_backends(self) -> None:
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.core.base_backend import BackendDict

        BackendDict.reset()

    def _set_aside(self, problem: str) -> Loaded:
        aside = self.path.with_name(f"{STATE_FILE}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            self.path.replace(aside)
        except OSError as exc:
            logger.error("sandbox state: cannot move %s aside: %s", self.path, exc)
            aside = self.path
        loaded = Loaded("set-aside", aside=aside, problem=problem)
        logger.error("%s", loaded)
        return loaded

    def save(self, *, force: bool = False) -> bool:
        """Write the state when it changed since the last save (or `force`); whether written."""
        with self._save_lock:
            seen = changes()
            if not force and seen == self._saved_changes:
                return False
            started = time.monotonic()
            with self.gate.exclusive():
                seen = changes()
                data = capture(self.extras() if self.extras else None)
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
            with temporary.open("wb") as file:
                os.fchmod(file.fileno(), 0o600)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(self.path)
            self._saved_changes = seen
            self.saves += 1
            self.last_save_seconds = time.monotonic() - started
            self.last_size = len(data)
            logger.debug(
                "sandbox state saved: %d KiB in %.3fs", len(data) // 1024, self.last_save_seconds
            )
            return True

    def start(self) -> None:
        """Save every `interval` seconds, when something changed, until `stop`."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="sandbox-state", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.save()
            except Exception:  # the next interval tries again; the server keeps serving
                logger.exception("sandbox state: saving to %s failed", self.path)

    def stop(self, *, save: bool = True) -> None:
        """Stop the timer and (by default) save one last time."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if save:
            try:
                self.save()
            except Exception:  # the last timed save is what remains
                logger.exception("sandbox state: the last save to %s failed", self.path)
