"""Writes that are never half done: a file or directory is built under a temporary name beside its target,
flushed to disk, then moved into place with ``os.replace`` (atomic), so readers see the old version or the
new one, never a torn one, and a failure leaves nothing behind. Also where secateurs caches things.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from secateurs.errors import SecateursError
from secateurs.storage.manifest import MANIFEST, is_model_directory

#: The manifest of a directory written by ``secateurs export``, replaceable like a model directory.
EXPORT_MANIFEST = "export.json"


class OutputExistsError(SecateursError, FileExistsError):
    """The output directory exists and may not be replaced."""


class WriteError(SecateursError, OSError):
    """Writing a model directory failed (disk full, permissions...); nothing was left behind."""


def cache_dir() -> Path:
    """Where secateurs caches things: ``$SECATEURS_CACHE``, else ``$XDG_CACHE_HOME/secateurs``, else
    ``~/.cache/secateurs``."""
    if os.environ.get("SECATEURS_CACHE"):
        return Path(os.environ["SECATEURS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "secateurs"


def _fsync_dir(directory: Path) -> None:
    """Flush a directory's entries, so that a rename in it survives a crash."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    """The mode an ordinary new file gets (0o666 minus the umask), read once at import: reading the umask
    means setting it, which is not thread-safe."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _finish_file(path: Path) -> None:
    """Give a finished file ordinary permissions (temp files and safetensors' files start private) and flush it."""
    os.chmod(path, _FILE_MODE)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on error it is removed.

    The temporary name is ``.NAME.XXXX.tmp``, so a cleaner can recognise strays a killed writer left.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp = Path(name)
    try:
        yield temp
        _finish_file(temp)
        os.replace(temp, target)
        _fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)


def check_output_dir(path: str | os.PathLike[str], overwrite: bool = False, *, needed_bytes: int = 0) -> Path:
    """Refuse an output directory that may not be written, before any work is done.

    An existing directory is replaced only with ``overwrite``, and only when it is empty or was
    written by secateurs (has a manifest): an unrelated directory is never deleted. The place it will be
    created in must accept a file, and hold ``needed_bytes`` more (the estimated output size).
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OutputExistsError(f"{target} exists and is not a directory; choose another output path")
        if not overwrite:
            raise OutputExistsError(f"{target} already exists; pass overwrite=True to replace it")
        if any(target.iterdir()) and not (is_model_directory(target) or (target / EXPORT_MANIFEST).is_file()):
            raise OutputExistsError(
                f"{target} is not a secateurs model directory (no {MANIFEST}); refusing to replace it, "
                "choose another path or remove it yourself"
            )
    parent = _existing_ancestor(target.parent)
    _check_writable(parent, target)
    _check_free_space(parent, target, needed_bytes)
    return target


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(parent: Path, target: Path) -> None:
    """Create and remove a file where the output will be written: the only sure test of permission."""
    if not parent.is_dir():
        raise WriteError(f"cannot write {target}: {parent} is not a directory; choose another output path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".secateurs-probe-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise WriteError(
            f"cannot write {target}: {parent} is not writable ({exc.strerror}); choose another output path"
        ) from None


def _check_free_space(parent: Path, target: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(parent).free
    if needed_bytes > free:
        raise WriteError(
            f"cannot write {target}: it needs about {needed_bytes / 1e6:,.1f} MB and {parent} has "
            f"{free / 1e6:,.1f} MB free; free some space or choose another output path"
        )


def _replace_directory(temp: Path, target: Path) -> None:
    """Move ``temp`` to ``target``; an existing ``target`` is restored if the move fails."""
    if not target.exists():
        os.replace(temp, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(temp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success its files are flushed and it becomes ``path``.

    On any error the temporary directory is removed and ``path`` is left as it was.
    """
    target = check_output_dir(path, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        yield temp
        for file in sorted(temp.rglob("*")):
            if file.is_file():
                _finish_file(file)
        _fsync_dir(temp)
        _replace_directory(temp, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
