"""One way to write a result file: a temporary file beside it, fsync, rename.

A reader (or a crash) sees the old file or the new one, never half of one. Every
writer of an output file in the package goes through `atomic_write`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces `path`.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(fh)` on a binary file that becomes `path` only once complete."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return Path(path)


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_text_atomic(path: Path | str, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, data: Mapping[str, Any] | list[Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def write_tiff_atomic(
    path: Path | str, image: NDArray[Any], metadata: Mapping[str, Any] | None = None
) -> Path:
    """TIFF with a JSON description (tifffile's shaped metadata) written atomically."""
    import tifffile

    def write(fh: IO[bytes]) -> None:
        tifffile.imwrite(fh, image, metadata=dict(metadata) if metadata is not None else None)

    return atomic_write(path, write)


def write_png_atomic(path: Path | str, image: NDArray[Any]) -> Path:
    """PNG of an 8- or 16-bit gray or BGR image, encoded in memory then written atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    return write_bytes_atomic(path, buf.tobytes())


def write_figure_atomic(path: Path | str, figure: Any, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format follows the file's suffix."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda fh: figure.savefig(fh, format=fmt, **savefig_kwargs))


def json_safe(value: Any) -> Any:
    """`value` as strict JSON: NaN/inf -> null, numpy scalars -> numbers, tuples -> lists.

    Python's json writes NaN as a bare `NaN` that most other readers reject.
    """
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
