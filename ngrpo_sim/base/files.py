"""Files written whole or not at all; folders a command made and left empty removed again."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file in the same folder and
    a rename: a reader, or a run killed half-way, sees the previous file or the new one, never a
    part of one. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        staging.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def replace_only_own(path, mark: str) -> None:
    """Refuse, with ``ValueError``, to replace a file at ``path`` that does not hold ``mark`` (the
    title of the page the caller writes) in its first 64 KiB: such a page is output the caller can
    write again; anything else there is the user's, or another command's."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with path.open("rb") as file:
            own = mark.encode("utf-8") in file.read(65536)
    except OSError:  # a folder, or unreadable: not a page of ours either
        own = False
    if not own:
        raise ValueError(f"out={str(path)!r} is a file other than the page this command writes; "
                         "nothing was changed: give another --out")


def missing_folders(folder) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, outermost first: what making it
    would create."""
    folder = Path(folder)
    return [path for path in [*reversed(folder.parents), folder] if not path.exists()]


def remove_if_empty(folders: list[Path]) -> bool:
    """Remove those of ``folders`` (outermost first, as ``missing_folders`` lists them) that are
    empty, innermost first; returns whether the innermost, the one made for the command, went."""
    for folder in reversed(folders):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return bool(folders) and not folders[-1].exists()
