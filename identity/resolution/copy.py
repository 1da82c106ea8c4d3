"""Binary ``COPY`` of id pairs straight from numpy (PostgreSQL).

A million ``(record, OneID)`` pairs formatted as text by Python cost about a
second; the binary tuple layout is fixed-width for two ``bigint`` columns, so
numpy lays the whole buffer out in one step.
"""

from __future__ import annotations

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
TRAILER = b"\xff\xff"
PAIR = np.dtype([("n", ">i2"), ("l0", ">i4"), ("v0", ">i8"), ("l1", ">i4"), ("v1", ">i8")])


def pairs_buffer(a: np.ndarray, b: np.ndarray) -> bytes:
    """The binary COPY stream of rows ``(a[i], b[i])`` (two NOT NULL bigints)."""
    rows = np.empty(len(a), dtype=PAIR)
    rows["n"], rows["l0"], rows["l1"] = 2, 8, 8
    rows["v0"], rows["v1"] = a, b
    return HEADER + rows.tobytes() + TRAILER


def copy_in(cursor, table: str, a: np.ndarray, b: np.ndarray, columns: str = "") -> None:
    """Append the pairs to ``table`` (its first two columns unless ``columns`` names them)."""
    if not len(a):
        return
    target = f"{table} ({columns})" if columns else table
    with cursor.cursor.copy(f"COPY {target} FROM STDIN (FORMAT binary)") as copy:
        copy.write(pairs_buffer(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)))
