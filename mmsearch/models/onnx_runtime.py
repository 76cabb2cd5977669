"""What the torch-free query models share: where exports live, how they are written, how they run.

A text query should not pay for importing torch (seconds from a cold shell). So the parts of the
models a text query runs (CLIP's text tower, the `tiny-itm` reranker) are exported once to ONNX,
with torch, and then run with onnxruntime. Exports live in the model cache
(``$MMSEARCH_CACHE/onnx/v<FORMAT>/<kind>/<model>-<weights digest>/``), keyed by the digest of
the weights they came from, so a retrained checkpoint never meets an old export. Each folder
holds the ``.onnx`` graph, its weights (``.onnx.data``) and a ``meta.json`` describing them; it
appears whole (written beside, then renamed) or not at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmsearch import paths

log = logging.getLogger(__name__)

FORMAT = 2
"""Bumped when an export's layout or meaning changes; older exports are then ignored."""
META = "meta.json"


RUNTIME_ENV = "MMSEARCH_TEXT_RUNTIME"
"""Set to ``torch`` to run text queries through torch as before (comparisons, debugging)."""


def available() -> bool:
    """Whether exports may be made and run: onnxruntime importable (checked without importing
    it) and not turned off by ``$MMSEARCH_TEXT_RUNTIME=torch``."""
    import importlib.util

    if os.environ.get(RUNTIME_ENV, "").strip().lower() == "torch":
        return False
    return importlib.util.find_spec("onnxruntime") is not None


def export_root() -> Path:
    return paths.cache_dir() / "onnx" / f"v{FORMAT}"


def export_dir(kind: str, name: str, weights_id: str) -> Path:
    """The folder of one export: a readable slug of the model name plus the weights digest."""
    return export_root() / kind / f"{slug(name)}-{weights_id}"


def slug(name: str) -> str:
    """A model name as a readable piece of a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-80:] or "model"


def file_stamp(path: Path | None) -> dict[str, Any] | None:
    """(path, size, mtime) of a weights file, to tell later whether it was replaced."""
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def stamp_current(stamp: dict[str, Any] | None) -> bool:
    """Whether the file a stamp describes is still the same file (no stamp: nothing to check)."""
    if not stamp:
        return True
    try:
        stat = os.stat(stamp["path"])
    except OSError:
        return False
    return stat.st_size == stamp["size"] and stat.st_mtime_ns == stamp["mtime_ns"]


def read_meta(folder: Path) -> dict[str, Any] | None:
    """An export's description, or None when it is missing, unreadable or of another format."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def restamp(folder: Path, weights_file: Path) -> bool:
    """Record that the export in `folder` is of `weights_file` as the file is now; False when
    there is no export. For a checkpoint copied or touched: its digest, in the folder's name,
    shows its weights are those exported, so exporting again would only make the same files."""
    meta = read_meta(folder)
    if meta is None:
        return False
    meta["weights_file"] = file_stamp(weights_file)
    fd, scratch = tempfile.mkstemp(prefix=f".{META}.", dir=folder)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(meta, indent=1) + "\n")
    os.replace(scratch, folder / META)
    return True


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[Path]:
    """A scratch folder beside `folder` that becomes `folder` when the block ends without error.

    An export already there (a stale or damaged one: callers export only when the one there
    cannot be used) is replaced. Two processes exporting at once both succeed, the last one's
    files staying; a process with the first one's files open keeps reading them.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    retired: Path | None = None
    try:
        yield scratch
        for file in scratch.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        try:
            os.rename(scratch, folder)
        except OSError:  # one is there: set it aside (another process may do so too), retry
            retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            with contextlib.suppress(OSError):
                os.replace(folder, retired / "export")
            os.rename(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / META).write_text(json.dumps({"format": FORMAT, **meta}, indent=1) + "\n")


def threads() -> int:
    """Threads for one inference: $OMP_NUM_THREADS when set, else up to 4 cores."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    if asked.isdigit() and int(asked) > 0:
        return int(asked)
    return max(1, min(4, os.cpu_count() or 1))


def optimize(raw: Path, target: Path) -> None:
    """Write `raw`'s graph as onnxruntime optimizes it, weights in a file beside it (`target` +
    ".data"), so opening it later skips the optimizer and maps the weights instead of parsing
    them: about a quarter of the start-up cost of opening the exported file as it is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", target.name + ".data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    options.log_severity_level = 4
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])


def runtime_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


def session(path: Path, *, optimized_by: str | None = None, prepack: bool = True) -> Any:
    """An onnxruntime CPU session for one exported model.

    A model `optimize`d by this onnxruntime version opens without running the optimizer again.
    ``prepack=False`` skips repacking the weights for the matrix kernels: a process that runs
    one query (the CLI) starts several times faster for large models, a server that runs many
    keeps the default (each pass is then faster).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: failures come back as exceptions, not on stderr
    if optimized_by == ort.__version__:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    # Threads that spin while waiting for work steal the cores from everything else on a
    # shared 2-core machine; a query's passes are short, so sleeping costs little.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
