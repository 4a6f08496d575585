"""Coupling maps as matrices, and the shadows and coherence read off them.

A run's stored map at a step is the upper triangle of kappa_ij over its B blocks
(``curvature_coupling``); here it becomes the symmetric (B, B) matrix, with the pairs' path lengths
(-1 where no computational path joins them).
"""

from __future__ import annotations

import duckdb
import numpy as np

from pipeline.curvature.coupling import global_coherence
from pipeline.curvature.shadows import SHADOW_WINDOW, find_shadows

#: One stored map: (step, kappa (B, B), path lengths (B, B), is_spectral).
CouplingMap = tuple[int, np.ndarray, np.ndarray, bool]


def coupling_matrices(con: duckdb.DuckDBPyConnection, run_id: str) -> list[CouplingMap]:
    """(step, kappa (B, B), pair path lengths (B, B), -1 where none, is_spectral) of every stored map, by
    step."""
    rows = con.execute("""SELECT c.step, c.block_i, c.block_j, c.kappa, coalesce(c.path_length, -1),
                                 coalesce(k.is_spectral, false)
                          FROM curvature_coupling c LEFT JOIN checkpoints k USING (run_id, step)
                          WHERE c.run_id = ? ORDER BY c.step""", [run_id]).fetchall()
    out = []
    for step in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == step]
        n = max(max(r[1], r[2]) for r in mine) + 1
        kappa, lengths = np.full((n, n), np.nan), np.full((n, n), -1)
        for _, i, j, k, length, _ in mine:
            kappa[i, j] = kappa[j, i] = np.nan if k is None else k
            lengths[i, j] = lengths[j, i] = length
        out.append((step, kappa, lengths, bool(mine[0][5])))
    return out


def shadow_rows(con: duckdb.DuckDBPyConnection) -> tuple[list[dict], list[dict]]:
    """Rows of ``shadows`` (every window of SHADOW_WINDOW consecutive maps of every run with a map), and
    one row per run: the global coherence (mean kappa over path pairs) of its first and last map, both
    over the pairs of the model as built (its first map's path lengths), and the number of shadows over
    its last SHADOW_WINDOW spectral maps (the same checkpoints in every arm, so the count compares
    across arms; 0 with fewer spectral maps)."""
    rows, per_run = [], []
    run_ids = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM curvature_coupling ORDER BY 1").fetchall()]
    for run_id in run_ids:
        maps = coupling_matrices(con, run_id)
        for end in range(SHADOW_WINDOW - 1, len(maps)):
            window = maps[end - SHADOW_WINDOW + 1: end + 1]
            rows += [{"run_id": run_id, "step_first": window[0][0], "step_last": window[-1][0],
                      "block_i": s.block_i, "block_j": s.block_j, "path_length": s.path_length,
                      "max_relative": s.max_relative, "mean_relative": s.mean_relative, "n_maps": len(window)}
                     for s in find_shadows([m[1] for m in window], [m[2] for m in window])]
        spectral = [m for m in maps if m[3]][-SHADOW_WINDOW:]
        last = (find_shadows([m[1] for m in spectral], [m[2] for m in spectral])
                if len(spectral) == SHADOW_WINDOW else [])
        first_lengths = maps[0][2]
        per_run.append({"run_id": run_id, "coherence_first": global_coherence(maps[0][1], first_lengths),
                        "coherence_last": global_coherence(maps[-1][1], first_lengths), "shadows_last": len(last)})
    return rows, per_run
