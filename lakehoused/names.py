"""Dataset names and inbox paths: which dropped file feeds which dataset, and how (DESIGN §2).

Pure functions of a path relative to the inbox root, so the local watcher and the bucket
watcher agree on every name without touching a filesystem.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath

from .errors import RejectedFile

DATASET_NAME_RE: re.Pattern[str] = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""What a dataset name must match: it is used unquoted as a SQL view name."""

ACCEPTED_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
"""File suffixes that are ingested, matched case-insensitively."""

# Names a writer uses while a file is still being written or is a backup copy.
_IGNORED_ENDINGS = (".tmp", ".part", ".partial", ".crdownload", "~")
_OUTSIDE_NAME_CHARS = re.compile(r"[^a-z0-9_]+")
_LETTER_OR_DIGIT = re.compile(r"[a-z0-9]")
REPLACE = "replace"
"""Mode of a top-level file: the file becomes the dataset's new version."""
APPEND = "append"
"""Mode of a file in a sub-folder: the file is added to the dataset as one more part."""


def is_valid_dataset_name(name: str) -> bool:
    """True when ``name`` is already a dataset name (no normalisation applied)."""
    # fullmatch, because "$" alone would also accept a trailing newline.
    return DATASET_NAME_RE.fullmatch(name) is not None


def normalise_dataset_name(raw: str) -> str:
    """Turn a file or folder name into a dataset name, or raise RejectedFile saying what to rename.

    Letters are folded to ASCII (``Ünïcode`` -> ``unicode``), then lower case; each run of
    characters outside ``[a-z0-9_]`` becomes ``_``; a leading digit gets a ``_`` prefix. A
    name with no letter or digit left (``日本語``, ``-``) is refused rather than turned into
    ``_``, which two different files would then share.
    """
    folded = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    name = _OUTSIDE_NAME_CHARS.sub("_", folded.lower())
    if name[:1].isdigit():
        name = "_" + name
    if is_valid_dataset_name(name) and _LETTER_OR_DIGIT.search(name):
        return name
    if not raw:
        why = "it is empty"
    elif not _LETTER_OR_DIGIT.search(name):
        why = "no letter or digit is left once it is written in ASCII"
    else:
        why = f"it becomes {name!r}, {len(name)} characters long, over the limit of 63"
    raise RejectedFile(
        f"{raw!r} is not a valid dataset name: {why}; rename the file (or folder) to at most "
        "63 letters, digits and _, or ingest it with `lakehoused ingest FILE --dataset NAME`",
        value=raw,
    )


def _posix(relpath: str | PurePath) -> PurePosixPath:
    """The path as POSIX parts, refusing anything that is not inside the inbox root."""
    path = PurePosixPath(PurePath(relpath).as_posix())
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"expected a path relative to the inbox root, got {str(relpath)!r}")
    return path


def is_ignored(relpath: str | PurePath) -> bool:
    """True for hidden entries (``.done/``, ``.rejected/``, dot files) and files still being written."""
    for part in _posix(relpath).parts:
        # Checked on folders too: a folder being copied as "x.part" is as incomplete as a file.
        if part.startswith(".") or part.lower().endswith(_IGNORED_ENDINGS):
            return True
    return False


def accepted_suffix(name: str | PurePath) -> str | None:
    """The accepted suffix a file name ends with (as spelt in the name), or None."""
    text = PurePath(name).name
    lower = text.lower()
    # Longest first, so "x.csv.gz" is never read as a ".gz" of something else.
    for suffix in sorted(ACCEPTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return text[len(text) - len(suffix) :]
    return None


@dataclass(frozen=True)
class InboxEntry:
    """Where a dropped file goes: its path under the inbox, its dataset and the ingest mode."""

    relpath: PurePosixPath
    dataset: str
    mode: str  # REPLACE | APPEND


def locate(relpath: str | PurePath) -> InboxEntry:
    """Map a file relative to the inbox root to its dataset and mode, or raise RejectedFile.

    A top-level file names its dataset and replaces it; a file anywhere under a sub-folder
    is appended to the dataset named by the first folder. Callers skip ``is_ignored`` paths
    first: an ignored file is neither ingested nor rejected.
    """
    path = _posix(relpath)
    suffix = accepted_suffix(path.name)
    if suffix is None:
        raise RejectedFile(
            f"only .csv and .tsv files (optionally .gz) are ingested; got {path.as_posix()}",
            value=path.name,
        )
    if len(path.parts) == 1:
        return InboxEntry(path, normalise_dataset_name(path.name[: -len(suffix)]), REPLACE)
    return InboxEntry(path, normalise_dataset_name(path.parts[0]), APPEND)


def delimiter_for(name: str | PurePath) -> str:
    """The field delimiter a file's suffix implies: a tab for .tsv(.gz), a comma otherwise."""
    suffix = accepted_suffix(name)
    return "\t" if suffix is not None and suffix.lower().startswith(".tsv") else ","


def compression_for(name: str | PurePath) -> str | None:
    """``"gzip"`` for a ``*.gz`` file, None for a plain one."""
    return "gzip" if PurePath(name).name.lower().endswith(".gz") else None
