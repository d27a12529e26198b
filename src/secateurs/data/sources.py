"""Calibration sources named by a string, and the files behind them, checked before any model loads.

One spelling serves the library and the CLI (``--calibration``)::

    english, random, builtin:NAME       built-in texts
    PATH  or  text:PATH                 a UTF-8 text file
    sts:FILE                            an STS-benchmark file (tab-separated; both sentences of each pair)
    csv:FILE:COLUMN  tsv:FILE:COLUMN    one text per row from COLUMN (a header name, or a 1-based number
                                        for a file without a header); several columns: COL1,COL2
    jsonl:FILE:FIELD                    one text per line from FIELD (several: F1,F2)
    images:DIR                          image files (flat, or an ImageFolder tree: one folder per class)
    python:MODULE:FUNCTION              FUNCTION() returns any source load_calibration takes

Task data (the sentences, rows or images the pruned model will see) is the calibration to prefer: on
all-MiniLM-L6-v2 it costs less accuracy than generic text (docs/data-aware.md). Readers here return
plain texts, image tensors or the factory's object; :mod:`secateurs.data.calibration` turns them
into batches.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from secateurs.errors import MissingDependencyError, PruningError
from secateurs.usercode import call_user, check_module, user_function

#: Built-in sources: name -> what it is. ``english`` is prose written for secateurs; ``random`` is
#: uniformly random token ids (a smoke-test source: real text calibrates better).
BUILTIN_SOURCES = {"english": "a few pages of varied English prose shipped with secateurs", "random": "random token ids"}

#: How each prefixed source is written (the first field after the prefix is a path, except for python:).
SPELLINGS = {
    "text": "text:FILE",
    "sts": "sts:FILE",
    "csv": "csv:FILE:COLUMN",
    "tsv": "tsv:FILE:COLUMN",
    "jsonl": "jsonl:FILE:FIELD",
    "images": "images:DIR",
    "python": "python:MODULE:FUNCTION",
    "builtin": "builtin:NAME",
}
_NEEDS_COLUMNS = ("csv", "tsv", "jsonl")
#: File suffixes that hold rows, not prose: refused as plain text, with the spelling that reads them.
_ROW_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SNIFF_BYTES = 8192
#: Share of control characters (besides tab, newlines, form feed) above which a "text" file is binary.
MAX_CONTROL_SHARE = 0.01


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source string: its ``kind`` (a key of :data:`SPELLINGS`), the path (module for python:) and
    the columns (fields; the function for python:)."""

    kind: str
    path: str
    columns: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ":".join([self.kind, self.path, ",".join(self.columns)] if self.columns else [self.kind, self.path])


def parse_source(source: str | os.PathLike) -> SourceSpec:
    """What a source string names (see the module docstring); paths are ``~``-expanded."""
    text = str(source)
    kind, _, rest = text.partition(":")
    if kind in SPELLINGS and rest:
        return _prefixed(kind, rest, text)
    if text.lower() in BUILTIN_SOURCES and not Path(text).exists():
        return SourceSpec("builtin", text.lower())
    path = os.path.expanduser(text)
    row_kind = _ROW_SUFFIXES.get(Path(path).suffix.lower())
    if row_kind is not None:
        raise PruningError(
            f"calibration source {text!r} holds rows: name the text column as {row_kind}:{text}:COLUMN "
            f"(or text:{text} to read it as plain text)"
        )
    return SourceSpec("text", path)


def _prefixed(kind: str, rest: str, text: str) -> SourceSpec:
    if kind == "builtin":
        if rest.lower() not in BUILTIN_SOURCES:
            raise PruningError(f"no built-in calibration text {rest!r}; built-ins: {', '.join(BUILTIN_SOURCES)}")
        return SourceSpec("builtin", rest.lower())
    if kind not in (*_NEEDS_COLUMNS, "python"):
        return SourceSpec(kind, os.path.expanduser(rest))
    path, _, last = rest.rpartition(":")
    columns = tuple(part.strip() for part in last.split(",") if part.strip())
    if not path or not columns:
        raise PruningError(f"calibration source {text!r}: write it as {SPELLINGS[kind]}")
    return SourceSpec(kind, path if kind == "python" else os.path.expanduser(path), columns)


# ---------------------------------------------------------------------------------------------- checks


def check_calibration_source(source: Any, tokenizer: Any = None) -> None:
    """Cheap checks of a calibration source before any model loads: files exist, are readable, are text
    (not binary, UTF-8, not empty), named columns exist, an image folder holds images, a factory module
    can be found, a tokenizer given as a path exists. Sources that are not strings are not checked."""
    if isinstance(tokenizer, (str, os.PathLike)) and not Path(tokenizer).expanduser().exists():
        raise PruningError(f"tokenizer path {str(tokenizer)!r} does not exist; give a saved tokenizer's directory")
    if not isinstance(source, (str, os.PathLike)):
        return
    spec = parse_source(source)
    if spec.kind in ("text", "sts", *_NEEDS_COLUMNS):
        check_text_file(_existing_file(spec))
        if spec.kind in ("csv", "tsv") and not _numbered(spec.columns):
            _header_index(spec, _first_row(spec))
    elif spec.kind == "images" and next(image_files(Path(spec.path)), None) is None:
        _no_images(spec.path)
    elif spec.kind == "python":
        check_module(spec.path, f"calibration source {spec}", PruningError)


def _existing_file(spec: SourceSpec) -> Path:
    path = Path(spec.path)
    if not path.is_file():
        why = "is a directory, not a file" if path.is_dir() else "does not exist"
        hint = f" (built-ins: {', '.join(BUILTIN_SOURCES)})" if spec.kind == "text" else ""
        raise PruningError(f"calibration file {spec.path!r} {why}; give an existing {spec.kind} file{hint}")
    if not os.access(path, os.R_OK):
        raise PruningError(f"calibration file {spec.path!r} cannot be read (permission denied)")
    return path


def check_text_file(path: Path) -> None:
    """Refuse an empty, binary or non-UTF-8 file from its first 8 KB, naming the file and the fix."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        raise PruningError(f"calibration file {str(path)!r} is empty; give a file with text in it")
    nuls = head.count(0)
    if nuls:
        raise PruningError(
            f"calibration file {str(path)!r} looks binary: {nuls} NUL bytes in the first 8 KB; give a UTF-8 text file"
        )
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, head, exc) from None
    controls = sum(unicodedata.category(c) == "Cc" and c not in "\t\n\r\f\v" for c in text)
    if controls > MAX_CONTROL_SHARE * len(text):
        raise PruningError(
            f"calibration file {str(path)!r} looks binary: {controls} control characters in the first 8 KB; "
            "give a UTF-8 text file"
        )


def _not_utf8(path: Path, data: bytes, exc: UnicodeDecodeError) -> PruningError:
    return PruningError(
        f"calibration file {str(path)!r} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
        "cannot be decoded; give a UTF-8 text file (convert it, e.g. with iconv)"
    )


def read_text_file(path: Path) -> str:
    """The whole file, decoded strictly as UTF-8 (a byte-order mark is dropped), after :func:`check_text_file`."""
    check_text_file(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, data, exc) from None
    if not text.strip():
        raise PruningError(f"calibration file {str(path)!r} is empty; give a file with text in it")
    return text


# ---------------------------------------------------------------------------------------------- rows


def read_texts(spec: SourceSpec) -> tuple[list[str], str]:
    """The texts of a text file (one string) or of a row source (sts, csv, tsv, jsonl: one per cell, duplicates
    dropped), and a line describing them."""
    if spec.kind == "text":
        path = _existing_file(spec)
        return [read_text_file(path)], path.name
    rows = {"sts": _sts_rows, "csv": _table_rows, "tsv": _table_rows, "jsonl": _jsonl_rows}[spec.kind](spec)
    texts = list(dict.fromkeys(text.strip() for row in rows for text in row if text and text.strip()))
    what = "both sentences" if spec.kind == "sts" else f"{'field' if spec.kind == 'jsonl' else 'column'} " + ",".join(
        spec.columns
    )
    if not texts:
        raise PruningError(f"calibration source {spec}: no text found in {what}")
    return texts, f"{what} of {Path(spec.path).name}"


def _sts_rows(spec: SourceSpec) -> Iterator[Sequence[str]]:
    """STS-benchmark layout: tab-separated, no header, gold score in column 5, sentences in columns 6 and 7."""
    lines = read_text_file(_existing_file(spec)).splitlines()
    rows = [fields[5:7] for fields in (line.split("\t") for line in lines) if len(fields) >= 7]
    if not rows:
        raise PruningError(
            f"calibration file {spec.path!r} has no STS rows (tab-separated, sentences in columns 6 and 7); "
            "for another layout use tsv:FILE:COLUMN"
        )
    return iter(rows)


def _numbered(columns: Sequence[str]) -> bool:
    return all(column.isdigit() for column in columns)


def _reader(spec: SourceSpec, text: str) -> Iterator[list[str]]:
    if spec.kind == "tsv":
        return csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(text.splitlines())


def _first_row(spec: SourceSpec) -> list[str]:
    with Path(spec.path).open(encoding="utf-8-sig", errors="replace") as handle:
        return next(_reader(spec, handle.readline()), [])


def _header_index(spec: SourceSpec, header: list[str]) -> list[int]:
    missing = [column for column in spec.columns if column not in header]
    if missing:
        raise PruningError(
            f"calibration file {spec.path!r} has no column {', '.join(map(repr, missing))}; its header row has "
            f"{', '.join(map(repr, header[:12]))} (or give 1-based column numbers for a file without a header)"
        )
    return [header.index(column) for column in spec.columns]


def _table_rows(spec: SourceSpec) -> Iterator[Sequence[str]]:
    """CSV/TSV rows: named columns are looked up in the header row, numbered ones (1-based) read every row."""
    rows = _reader(spec, read_text_file(_existing_file(spec)))
    if _numbered(spec.columns):
        indices = [int(column) - 1 for column in spec.columns]
        if min(indices) < 0:
            raise PruningError(f"calibration source {spec}: column numbers start at 1")
    else:
        indices = _header_index(spec, next(rows, []))
    return ([row[i] for i in indices if i < len(row)] for row in rows)


def _jsonl_rows(spec: SourceSpec) -> Iterator[Sequence[str]]:
    """One JSON object per line; the named fields that hold strings."""
    for number, line in enumerate(read_text_file(_existing_file(spec)).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PruningError(f"calibration file {spec.path!r}, line {number}: not JSON ({exc.msg})") from None
        if isinstance(record, dict):
            yield [record[f] for f in spec.columns if isinstance(record.get(f), str)]


# ---------------------------------------------------------------------------------------------- images


def image_files(root: Path) -> Iterator[Path]:
    """Image files under ``root``, in sorted order (by suffix, case-insensitive)."""
    if root.is_dir():
        yield from (p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _no_images(path: str) -> NoReturn:
    why = "holds no image files" if Path(path).is_dir() else "is not a directory"
    raise PruningError(f"calibration folder {path!r} {why}; give a folder of {', '.join(IMAGE_SUFFIXES)} files")


def image_tensors(
    root: str, input_shape: Sequence[int] | None, num_samples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``num_samples`` images drawn (seeded) from the folder, as floats in [0, 1] shaped ``[N, C, H, W]``, and
    their class labels when the folder is an ImageFolder tree (one subfolder per class, in sorted order).

    ``input_shape`` (``C, H, W``, optionally after a batch size) sets the size images are resized to and
    the channels (1: greyscale, 3: RGB); without it images keep their own size and must all share it."""
    files = list(image_files(Path(root)))
    if not files:
        _no_images(root)
    chosen = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:num_samples].tolist()
    picked = [files[i] for i in sorted(chosen)]
    _check_sizes(picked, input_shape)
    images = torch.stack([_image(path, input_shape) for path in picked])
    if any(path.parent == Path(root) for path in files):
        return images, None
    classes = sorted({path.relative_to(root).parts[0] for path in files})
    return images, torch.tensor([classes.index(path.relative_to(root).parts[0]) for path in picked])


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("images:DIR calibration needs Pillow: pip install pillow") from None
    return Image


def _check_sizes(paths: Sequence[Path], input_shape: Sequence[int] | None) -> None:
    """Images are resized to ``input_shape``; without one they must all have the same size already."""
    if input_shape is not None:
        if len(input_shape) < 3 or input_shape[-3] not in (1, 3):
            raise PruningError(
                f"images are resized to input_shape (C, H, W with C = 1 or 3), got {tuple(input_shape)}; "
                "for other inputs give tensors or a DataLoader"
            )
        return
    sizes = set()
    for path in paths:
        with _pillow().open(path) as image:
            sizes.add(image.size)
    if len(sizes) > 1:
        raise PruningError(
            f"the calibration images have {len(sizes)} different sizes; pass input_shape=(C, H, W) to resize them"
        )


def _image(path: Path, input_shape: Sequence[int] | None) -> torch.Tensor:
    """One image as a ``[C, H, W]`` float tensor in [0, 1]."""
    with _pillow().open(path) as opened:
        channels = input_shape[-3] if input_shape is not None else (1 if opened.mode in ("1", "L", "I", "F") else 3)
        image = opened.convert("L" if channels == 1 else "RGB")
        if input_shape is not None:
            image = image.resize((input_shape[-1], input_shape[-2]))
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        width, height = image.size
    return pixels.view(height, width, channels).permute(2, 0, 1).float().div_(255)


# ---------------------------------------------------------------------------------------------- python


def call_factory(spec: SourceSpec) -> Any:
    """``FUNCTION()`` of a ``python:MODULE:FUNCTION`` source; any failure names the source."""
    function, _, _ = user_function(f"{spec.path}:{spec.columns[0]}", f"calibration source {spec}", PruningError,
                                   "python:mydata:calibration_batches")
    return call_user(function, f"calibration source {spec}")