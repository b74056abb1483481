"""The embedded Celery broker: kombu's file-system transport, made crash-safe.

kombu's stock transport writes each message in place, so a consumer polling the folder can
pick up a file that exists but is still empty; its worker then dies decoding it (seen here:
741 of 1,000 tasks left unprocessed in one of seven runs). It also claims a message with
``shutil.move`` into the system temp folder, which falls back to copy-and-delete across
file systems, so two consumers could both take the same message.

This transport writes each message to a hidden temporary name and renames it into place
(``os.replace`` is atomic within one folder), and claims a message by renaming it into a
``claimed`` folder beside the queue folder — one rename, one winner. A file that cannot be
decoded is moved to ``broken/`` and logged instead of killing the worker.

Unacknowledged messages live only in the worker's memory, as with every virtual transport:
a worker killed with SIGKILL loses the message it held. That is acceptable because the
database, not the broker, is the source of truth: the runs reaper re-enqueues such work.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.connection import Connection
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    # kombu-stubs declare AbstractChannel._put(queue, message) without the **kwargs kombu
    # passes (virtual/base.py), and filesystem.Channel._put, whose signature this mirrors,
    # names the argument `payload`; the stubs ignore the same clash on filesystem.Channel.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        folder = Path(self.data_folder_out)
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        tmp = folder / f".tmp-{name}"
        try:
            # No fsync: the rename makes the whole message visible at once to every other
            # process, which is what matters; surviving a power cut does not, because the
            # reaper re-enqueues from the database.
            tmp.write_bytes(str_to_bytes(dumps(payload)))
            tmp.replace(folder / name)
        except OSError as exc:
            raise ChannelError(f"Cannot add message to {folder}: {exc}") from exc

    def _listing(self, queue: str, folder: Path) -> list[str]:
        """Names waiting in `queue`, oldest first. One directory listing serves many gets:
        listing and sorting per message would make a long queue drain in O(n²)."""
        cache = self.__dict__.setdefault("_names", {})
        names = cache.get(queue)
        if not names:
            suffix = f".{queue}.msg"
            names = sorted(
                (
                    n
                    for n in os.listdir(folder)  # noqa: PTH208 - names are all we need
                    if n.endswith(suffix) and not n.startswith(".")
                ),
                reverse=True,
            )
            cache[queue] = names
        return names

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """The oldest message waiting in `queue`, or Empty. Never blocks: kombu polls, so
        `timeout` (part of kombu's AbstractChannel._get) is not used."""
        folder = Path(self.data_folder_in)
        claimed = folder.parent / "claimed"
        names = self._listing(queue, folder)
        while names:
            name = names.pop()
            target = claimed / f"{os.getpid()}-{name}"
            try:
                (folder / name).rename(target)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                payload = target.read_bytes()
                message = loads(bytes_to_str(payload))
            except (OSError, ValueError) as exc:
                broken = folder.parent / "broken"
                broken.mkdir(exist_ok=True)
                target.rename(broken / name)
                logger.error("Unreadable broker message %s moved to %s: %s", name, broken, exc)
                continue
            target.unlink()
            return message
        raise Empty()

    def _size(self, queue: str) -> int:
        suffix = f".{queue}.msg"
        return sum(
            1
            for name in os.listdir(self.data_folder_in)  # noqa: PTH208
            if name.endswith(suffix) and not name.startswith(".")
        )

    def _purge(self, queue: str) -> int:
        suffix = f".{queue}.msg"
        folder = Path(self.data_folder_in)
        count = 0
        for name in os.listdir(folder):  # noqa: PTH208
            if name.endswith(suffix) and not name.startswith("."):
                try:
                    (folder / name).unlink()
                    count += 1
                except FileNotFoundError:
                    pass
        return count


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = "onrampfs"
    driver_name = "onrampfs"

    def __init__(self, client: Connection, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        assert options is not None  # Connection.__init__ turns None into {}
        for key in ("data_folder_in", "data_folder_out"):
            folder = Path(options.get(key, "data"))
            folder.mkdir(parents=True, exist_ok=True)
            (folder.parent / "claimed").mkdir(exist_ok=True)
        Path(options.get("control_folder", "control")).mkdir(parents=True, exist_ok=True)
