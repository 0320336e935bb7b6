"""OUT_DIR: a Parquet data set of archive rows, one file per part, each written whole or not at all."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from medanomaly.archive.rows import COLUMNS
from medanomaly.errors import InputError

SCHEMA = pa.schema([
    ("path", pa.string()), ("label", pa.string()), ("status", pa.string()), ("score", pa.float64()),
    ("decision", pa.string()), ("abnormal", pa.bool_()), ("threshold", pa.float64()), ("model", pa.string()),
    ("model_version", pa.int64()), ("n_images", pa.int64()), ("seconds", pa.float64()), ("error", pa.string()),
    ("domain_reason", pa.string()), ("map", pa.string()),
])  # fmt: skip
assert tuple(SCHEMA.names) == COLUMNS


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows as an Arrow table with the archive schema."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


class Store:
    """The Parquet parts in ``out_dir`` (``part-*.parquet``).

    A part appears by an atomic rename, so a kill loses at most the part being written, never leaving half a file.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for partial in self.out_dir.glob(".part-*.tmp"):
            partial.unlink(missing_ok=True)

    def parts(self) -> list[Path]:
        """The complete parts, sorted."""
        return sorted(self.out_dir.glob("part-*.parquet"))

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every row written so far (an empty table when none)."""
        parts = self.parts()
        if not parts:
            return SCHEMA.empty_table().select(list(columns or COLUMNS))
        dataset = pads.dataset([str(p) for p in parts], schema=SCHEMA, format="parquet")
        return dataset.to_table(columns=list(columns or COLUMNS))

    def done(self, model: str, version: int) -> set[str]:
        """Paths already in the store; refuses a store written by another model or model version.

        Raises:
            InputError: The store holds rows of another model or version (score into another OUT_DIR).
        """
        table = self.read(["path", "model", "model_version"])
        others = {(m, v) for m, v in zip(table["model"].to_pylist(), table["model_version"].to_pylist(), strict=True)}
        others.discard((model, version))
        if others:
            found = ", ".join(f"{m} v{v}" for m, v in sorted(others))
            raise InputError(self.out_dir, f"holds rows of another model ({found}), not {model} v{version}",
                             "choose another --out, so that every row of a data set comes from one model")
        return set(table["path"].to_pylist())

    def write(self, table: pa.Table) -> Path | None:
        """Write ``table`` as a new part (nothing when it is empty); returns the part's path."""
        if table.num_rows == 0:
            return None
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"  # sorts in writing order
        partial = self.out_dir / f".{name}.tmp"
        pq.write_table(table.cast(SCHEMA), partial)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        final = self.out_dir / name
        partial.replace(final)
        return final
