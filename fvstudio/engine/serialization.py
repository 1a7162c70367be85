"""Saving fitted models without pickles: arrays in an ``.npz``, metadata as JSON inside it.

Every file is written to a temporary name in the destination folder and renamed into place, so a
crash or a cancel never leaves a half-written model behind (the rename is atomic on one filesystem).

Temporary names. :func:`atomic_path` writes to ``.<name>.<host>-<pid>.<random>.tmp<suffix>`` beside
the target (``<host>``: 6 hex digits of SHA-1 of the host name, ``<pid>``: the writer's process id).
A kill (SIGKILL, power cut) can leave such a file behind; :func:`remove_stale_temporaries` deletes
the ones no live writer can own. The rule (:func:`is_stale_temporary`), for a name of that form:

- written by this process: stale unless it is one of this process's writes still in progress
  (a previous process that had the same pid, e.g. in a container, left it);
- written on this host by a process that no longer exists: stale at once;
- written on this host by another live process, or on another host (a shared workspace): stale
  only once older than :data:`STALE_TMP_MAX_AGE` (24 h; the pid may have been reused);
- names of the older form without host and pid (``.<name>.<random>.tmp<suffix>``): stale once
  older than :data:`STALE_TMP_SECONDS` (10 min, the rule of earlier versions).

Files not named like this are never touched.

Permissions. ``mkstemp`` creates the temporary file 0600; before the rename it gets ``0666 & ~umask``, the
mode ``open()`` would have given it, so results, sessions and exports are as readable as any other file the
user writes. The umask is read once, at import (:func:`_read_umask`).

Errors. A full disk (``ENOSPC``/``EDQUOT``) while writing raises :class:`DiskFullError`, naming the
folder and the space free (the temporary file is removed, the old target kept). A file that cannot
be read back because it is truncated or garbled raises :class:`DamagedFileError` (a ValueError)
naming it, so callers can treat it as missing and recompute it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

_META_KEY = "__meta_json__"

#: Age (seconds) after which an old-style temporary name (no host/pid in it) counts as stale.
STALE_TMP_SECONDS = 600
#: Age (seconds) after which a temporary of a live process or of another host counts as stale.
STALE_TMP_MAX_AGE = 24 * 3600

_HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_TMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[a-z0-9_]+\.tmp(?P<suffix>\.[^.]*)?$")
_OLD_TMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")
_LIVE: set = set()          # this process's temporaries being written (absolute paths as str)
_LIVE_LOCK = threading.Lock()
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _read_umask() -> int:
    """The process umask, without changing it where the system tells it (Linux: ``/proc/self/status``);
    elsewhere set to 0 and restored at once (done once, at import, before any worker thread runs)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: ``0666 & ~umask``: the mode every file written through :func:`atomic_path` ends up with.
FILE_MODE = 0o666 & ~_read_umask()


def format_bytes(n: Optional[float]) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1000, as disk tools show free space)."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(folder) -> Optional[int]:
    """Free bytes on the disk holding ``folder`` (or its nearest existing parent), None if unknown."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError meaning "no space left" (ENOSPC) or "disk quota exceeded" (EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


class DiskFullError(OSError):
    """The disk of ``folder`` is full: ``free`` bytes left, ``needed`` (an estimate, or None)."""

    def __init__(self, folder, free: Optional[int] = None, needed: Optional[int] = None,
                 what: str = "write the file") -> None:
        self.folder = Path(folder)
        self.free = free
        self.needed = needed
        self.what = what
        need = f", about {format_bytes(needed)} more needed" if needed else ""
        msg = (f"no space left on the disk holding {self.folder}: {format_bytes(free)} free{need} to {what}. "
               f"Free some space (or choose another workspace folder) and run again; finished work is kept")
        super().__init__(errno.ENOSPC, msg)
        self.args = (msg,)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return (type(self), (self.folder, self.free, self.needed, self.what))


class DamagedFileError(ValueError):
    """A cached file exists but cannot be read back (truncated, garbled): ``path`` and ``reason``."""

    def __init__(self, path, reason: str, message: Optional[str] = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.message = message or f"{self.path} is damaged ({reason})"
        super().__init__(f"{self.message}; delete it and run again to recompute it")

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.message))


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal is sent, only the existence check
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


def is_temporary_name(name: str) -> bool:
    """True for a file name :func:`atomic_path` (of this or an earlier version) writes to."""
    return bool(_TMP_RE.match(name) or _OLD_TMP_RE.match(name))


def is_stale_temporary(path, now: Optional[float] = None) -> bool:
    """True if ``path`` is a temporary of :func:`atomic_path` that no live writer can own (see the
    module docstring for the rule). False for any other file name."""
    path = Path(path)
    m = _TMP_RE.match(path.name)
    old = None if m else _OLD_TMP_RE.match(path.name)
    if m is None and old is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    if old is not None:
        return age > STALE_TMP_SECONDS
    pid = int(m.group("pid"))
    if m.group("host") == _HOST_TAG:
        if pid == os.getpid():
            with _LIVE_LOCK:
                return str(path.absolute()) not in _LIVE
        if not _pid_alive(pid):
            return True
    return age > STALE_TMP_MAX_AGE


def remove_stale_temporaries(folder, *, recursive: bool = False) -> List[Path]:
    """Delete the stale temporaries (:func:`is_stale_temporary`) in ``folder`` (and its sub-folders
    with ``recursive``); returns the paths removed. Errors (a file vanishing meanwhile) are ignored."""
    removed: List[Path] = []
    folder = Path(folder)
    now = time.time()
    try:
        it = os.scandir(folder)
    except OSError:
        return removed
    subdirs = []
    with it:
        for de in it:
            try:
                if recursive and de.is_dir(follow_symlinks=False):
                    subdirs.append(de.path)
                    continue
                if de.name.startswith(".") and de.is_file(follow_symlinks=False) \
                        and is_stale_temporary(de.path, now):
                    os.unlink(de.path)
                    removed.append(Path(de.path))
            except OSError:
                pass
    for d in subdirs:
        removed += remove_stale_temporaries(d, recursive=True)
    return removed


@contextmanager
def atomic_path(path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to (by any means: ``np.save``, a memmap, an
    image encoder); on success (optionally fsync and) rename it onto ``path``, on any exception
    (including a cancel) delete it. Readers never see a partial file. The temporary name keeps the
    suffix of ``path`` so writers that append a suffix (``np.save``) do not rename it; it names the
    host and process (see the module docstring) so stale ones can be told from live ones.

    A full disk raises :class:`DiskFullError` naming the folder and the free space."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST_TAG}-{os.getpid()}.",
                                   suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path.parent, free_bytes(path.parent), None, f"write {path.name}") from exc
        raise
    os.close(fd)
    key = str(Path(tmp).absolute())
    with _LIVE_LOCK:
        _LIVE.add(key)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 -> what open() would have given (after the fsync: a
        #                           umask without owner write would make the file unopenable for it)
        os.replace(tmp, path)
    except BaseException as exc:
        written = None
        try:
            written = os.path.getsize(tmp)
            os.unlink(tmp)
        except OSError:
            pass
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path.parent, free_bytes(path.parent), None,
                                f"write {path.name} ({format_bytes(written)} written before the disk "
                                f"was full)") from exc
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(key)


@contextmanager
def atomic_open(path, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """:func:`atomic_path`, opened for binary writing."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as fh:
            yield fh


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file + rename."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_save_npz(path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> Path:
    """Save named arrays (and an optional JSON-able ``meta`` dict) to ``path`` atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"model file {path} must end in .npz")
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    if _META_KEY in payload:
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    payload[_META_KEY] = np.frombuffer(json.dumps(dict(meta or {}), sort_keys=True).encode(), dtype=np.uint8)
    with atomic_open(path) as fh:
        np.savez(fh, **payload)
    return path


def load_npz(path, *, kind: str | None = None) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Load arrays and metadata saved by :func:`atomic_save_npz` (never unpickles).

    With ``kind``, the metadata's ``"kind"`` entry must match, so loading a PCA file as a GMM fails
    with a message naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with data:
            arrays = {k: data[k] for k in data.files if k != _META_KEY}
            meta = json.loads(bytes(data[_META_KEY]).decode()) if _META_KEY in data.files else {}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError, UnicodeDecodeError) as exc:
        # BadZipFile: truncated (no central directory) or garbled (CRC mismatch, bad local header);
        # ValueError: not an archive at all (garbled first bytes), bad JSON metadata
        raise DamagedFileError(path, f"{type(exc).__name__}: {exc}",
                               f"{path} is not a readable fvstudio model file (truncated, garbled or "
                               f"not written by fvstudio: {type(exc).__name__}: {exc})") from exc
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind', 'unknown')!r} model, not a {kind!r}")
    return arrays, meta
