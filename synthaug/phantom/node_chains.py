"""Lymph-node chains: the one table of where each chain runs, read by the phantom and the lesion prior.

A chain is a polyline from the head down. Its points sit at fixed fractions of the body's height
below the vertex (:attr:`NodeChain.levels`), which both readers share. Across the slice they are
placed two ways, because the two readers know different things:

- the phantom (:func:`synthaug.phantom.lesion_plan.node_chains`) places them on its own landmarks
  (spine, aorta, hips, the chest's edge), which an image does not give;
- the lesion prior (:mod:`synthaug.phantom.lesions`) places them from the body's extent on that slice:
  :attr:`NodeChain.across` holds, per point, the offset to the side as a fraction of the body's
  half-width and the position front to back as a fraction of its depth (0 = back), measured on
  the phantom's chains (``scripts/lesion_prior_check.py``).

A sided chain is named ``<chain>_R`` / ``<chain>_L`` in a lesion site (``node:axillary_L``); the
left one mirrors the right.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeChain:
    """One lymph-node chain: its points' heights and their places across the slice."""

    #: Fraction of the body's height below the vertex of each point, top to bottom.
    levels: tuple[float, ...]
    #: (lateral fraction of the half-width, front-to-back fraction of the depth) of each point.
    across: tuple[tuple[float, float], ...]
    #: Whether the chain comes as a right and a left one.
    sided: bool = True

    def __post_init__(self) -> None:
        if len(self.levels) < 2 or len(self.levels) != len(self.across):
            raise ValueError(f"a node chain needs two or more points, each with a level and a place across; "
                             f"got {len(self.levels)} levels and {len(self.across)} places")


#: The chains. The phantom starts the cervical chain 5 mm below its chin, which this level stands
#: in for where the chin is not known; "para_aortic" follows the aorta wherever a reader finds it.
NODE_CHAINS: dict[str, NodeChain] = {
    "cervical": NodeChain((0.118, 0.155), ((0.54, 0.50), (0.59, 0.50))),
    "supraclavicular": NodeChain((0.158, 0.168), ((0.31, 0.54), (0.51, 0.54))),
    "axillary": NodeChain((0.19, 0.235), ((0.80, 0.45), (0.80, 0.50))),
    "hilar": NodeChain((0.235, 0.26), ((0.08, 0.55), (0.12, 0.55))),
    "iliac": NodeChain((0.41, 0.465), ((0.05, 0.45), (0.37, 0.55))),
    "inguinal": NodeChain((0.49, 0.52), ((0.46, 0.82), (0.41, 0.82))),
    "mediastinal": NodeChain((0.19, 0.23, 0.25), ((0.04, 0.44), (0.04, 0.44), (0.04, 0.44)), sided=False),
    "para_aortic": NodeChain((0.34, 0.40), ((0.12, 0.40), (0.12, 0.40)), sided=False),
    "mesenteric": NodeChain((0.37, 0.41), ((-0.20, 0.51), (0.20, 0.51)), sided=False),
}


def node_site_names() -> tuple[str, ...]:
    """Every chain a ``node:`` site may name: ``<chain>_R`` and ``<chain>_L`` for sided chains,
    ``<chain>`` for the others."""
    return tuple(n for name, c in NODE_CHAINS.items() for n in ((f"{name}_R", f"{name}_L") if c.sided else (name,)))


def split_node_site(site: str) -> tuple[str, int]:
    """The chain and side (+1 right, -1 left) of a ``node:<chain>[_R|_L]`` site; an unsided name
    of a sided chain means the right one. ``ValueError`` when the chain is not known."""
    name = str(site).removeprefix("node:")
    chain, side = (name[:-2], -1 if name.endswith("_L") else 1) if name[-2:] in ("_R", "_L") else (name, 1)
    if not str(site).startswith("node:") or chain not in NODE_CHAINS:
        raise ValueError(f"{site!r} is not a node site; use node:<chain> with a chain of {sorted(NODE_CHAINS)} "
                         "(sided chains take _R or _L)")
    return chain, side
