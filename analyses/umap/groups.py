"""Hold-out groups of the k-NN: whole (data set, study) groups, so that twins of a run (the same
architecture and data set with another seed, regularizer, train fraction or optimizer, from the same
study) are never its neighbours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def dataset_study_groups(run_ids: Sequence[str], datasets: Sequence[str],
                         studies: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """run_id -> its hold-out group: the connected component of the runs linked by a shared
    (data set, study) pair.

    ``run_ids`` and ``datasets`` (one entry per row; a run's data set is constant); ``studies``: run_id ->
    the studies it belongs to (a run may belong to several, which joins their groups of its data set:
    holding out one of them alone would let the run's twins in the other train the classifier). A run in
    no study is a group of its own. The group's name is its sorted "data set/study" pairs joined by "+".
    """
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    run_keys: dict[str, list[str]] = {}
    for run, ds in zip(run_ids, datasets, strict=True):
        if run in run_keys:
            continue
        keys = [f"{ds}/{s}" for s in sorted(set(studies.get(run, ())))] or [f"{ds}/run:{run}"]
        for k in keys:
            parent.setdefault(k, k)
        for k in keys[1:]:
            union(keys[0], k)
        run_keys[run] = keys
    members: dict[str, set[str]] = {}
    for keys in run_keys.values():
        for k in keys:
            members.setdefault(find(k), set()).add(k)
    return {run: "+".join(sorted(members[find(keys[0])])) for run, keys in run_keys.items()}
