"""One way to write a file of the recipe: to `NAME.tmp` beside it, flushed and fsynced, then
renamed over the target, so a killed run never leaves a half-written model, manifest or report."""
from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
