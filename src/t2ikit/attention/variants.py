"""Attention variants named on a command line or in a generation spec ("topk:2", "hier:1/1/0", ...): each
name gives the fresh attention hooks that run it (`t2ikit.attention.sparse`, `t2ikit.attention.hierarchical`).
"""

from __future__ import annotations

from t2ikit.attention.hierarchical import HierarchicalHook
from t2ikit.attention.sparse import DynamicHook, PruneHook, TopKHook


def hooks_from_spec(spec: str) -> list:
    """Hooks named on a command line: "dense", "topk:K", "topp:P", "prune" (padding), "prune:K",
    "hier:W/P/S" (hierarchical lambdas, e.g. "hier:1/1/0"). Checked before any model is loaded."""
    name, _, arg = spec.partition(":")
    try:
        if name == "dense" and not arg:
            return []
        if name == "topk":
            return [TopKHook(int(arg))]
        if name == "topp":
            return [DynamicHook(float(arg))]
        if name == "prune":
            return [PruneHook(keep=int(arg) if arg else None)]
        if name == "hier":
            return [HierarchicalHook(tuple(float(x) for x in arg.split("/")) if arg else (1.0, 1.0, 0.0))]
    except ValueError as e:
        raise ValueError(f"bad variant {spec!r}: {e}") from None
    raise ValueError(f"unknown variant {spec!r}; allowed: dense, topk:K, topp:P, prune, prune:K, hier:W/P/S")
