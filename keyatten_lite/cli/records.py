"""Input and output of the long command-line runs: JSONL records with errors that name the file and the
line, an output written atomically that keeps what was done when a run stops, and a progress bar.

A bad line (not UTF-8, not JSON, no string ``text``) is a ``RecordError``. With ``on_error="stop"``
the run stops there, after writing every record extracted before it; with ``"skip"`` the line is left
out and reported at the end, and every good record is written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from keyatten_lite.errors import InvalidArgumentError

ON_ERROR = ("stop", "skip")


class RecordError(InvalidArgumentError):
    """One input line that cannot be read as a record (its message names the file and the line)."""


@dataclass
class Record:
    index: int  # position among the non-blank lines of the input (the id when a record has none)
    line: int
    data: dict
    lang: str | None = None


def _source_name(source: str) -> str:
    return "<stdin>" if source == "-" else source


def open_input(source: str) -> IO[bytes]:
    """The input as bytes (decoding is per line, so a bad byte is reported with its line)."""
    if source == "-":
        return sys.stdin.buffer
    path = Path(source)
    if path.is_dir():
        raise InvalidArgumentError(f"{source}: is a folder, not a JSONL file")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InvalidArgumentError(f"{source}: no such file") from None
    except PermissionError:
        raise InvalidArgumentError(f"{source}: permission denied") from None
    except OSError as exc:
        raise InvalidArgumentError(f"{source}: cannot be read ({exc.strerror or exc})") from None


def iter_records(source: str, errors: list[RecordError], on_error: str = "stop") -> Iterator[Record]:
    """Records with a string ``text`` field; bad lines raise (``stop``) or are appended to ``errors``."""
    name = _source_name(source)
    handle = open_input(source)
    index = 0
    try:
        for line_number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = RecordError(f"{name} line {line_number}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            else:
                if not line.strip():
                    continue
                problem = None
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    problem = RecordError(f"{name} line {line_number}: not valid JSON ({exc.msg})")
                else:
                    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
                        problem = RecordError(f"{name} line {line_number}: expected an object with a string 'text' field")
            if problem is not None:
                if on_error == "stop":
                    raise problem
                errors.append(problem)
                index += 1  # a skipped line keeps its place: later records keep their default ids
                continue
            yield Record(index, line_number, data)
            index += 1
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def count_lines(source: str) -> int | None:
    """Non-blank lines of a file (for a progress bar's total); None for stdin."""
    if source == "-":
        return None
    try:
        with open(source, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def check_output_path(path: str) -> None:
    """Fail before any work when the output cannot be written where asked."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise InvalidArgumentError(f"{path}: is a folder; give a file name for the output")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InvalidArgumentError(f"{path}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise InvalidArgumentError(f"{path}: the folder {str(folder)!r} is not writable")


class LineWriter:
    """JSONL lines to stdout as they come, or to a temporary file beside ``path`` that replaces
    ``path`` when closed, also when the run stopped early: what was extracted is never lost."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        if path == "-":
            self._handle: IO[str] = sys.stdout
            self._temp = None
        else:
            import tempfile

            target = Path(path)
            fd, temp = tempfile.mkstemp(prefix=".keyatten-lite-", suffix=".tmp", dir=str(target.parent or "."))
            self._temp = temp
            self._handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write(self, obj: Any) -> None:
        self._handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._temp is None:
            self._handle.flush()
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        target = Path(self.path)
        mode = 0o666 & ~_umask()
        os.chmod(self._temp, mode if not target.exists() else target.stat().st_mode & 0o777)
        os.replace(self._temp, target)
        self._temp = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def report_skipped(errors: list[RecordError]) -> None:
    if not errors:
        return
    print(f"keyatten-lite: skipped {len(errors)} bad line{'s' if len(errors) != 1 else ''}:", file=sys.stderr)
    for error in errors[:50]:
        print(f"  {error}", file=sys.stderr)
    if len(errors) > 50:
        print(f"  ... and {len(errors) - 50} more", file=sys.stderr)


class Progress:
    """A tqdm bar on stderr when it is a terminal; silent (and tqdm not imported) otherwise."""

    def __init__(self, total: int | None, description: str, unit: str = "doc") -> None:
        self._bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False)

    @property
    def active(self) -> bool:
        return self._bar is not None

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
