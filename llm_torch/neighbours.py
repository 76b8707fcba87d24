"""Training compositions and their space groups: a nearest-neighbour prior for ranking hypotheses.

Crystals of similar composition often share a structure type (MP-20 holds many substitution
families), which a small language model only partly memorises. :class:`CompositionNeighbours`
keeps, for every training crystal, its element fractions, space group and property values, and
gives a kernel-weighted space-group distribution over the ``k`` nearest training compositions
(L1 distance of element-fraction vectors, the distance of the nearest-composition baseline):

    p_nn(g | x) = sum_{j in kNN(x), g_j = g} exp(-d(x, x_j) / tau) / sum_{j in kNN(x)} exp(-d(x, x_j) / tau)
Distances take few values (fractions of small integers), so the k-th place is nearly always tied
(919 of the first 1,000 holdout rows at k = 50): ties are broken by closeness of the crystal's property
to the target (|value - target|, unknown values last), then by table order, so the prior is
deterministic and favours same-composition-family crystals with the asked property.

:class:`llm_torch.predict.Predictor` adds ``weight * log(p_nn(g) + floor)`` to each hypothesis'
log-probability (a product of experts; weight, tau, k and floor chosen on the holdout split).
The table is stored without pickle as a compressed ``.npz`` in sparse form (per crystal: element
numbers and counts), built by ``python -m llm_torch.neighbours --split train --out FILE``; the
embedded one (``llm_torch/checkpoints/mp20_train_neighbours.npz``) holds the policy ``train`` split.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from unimdm_jax.errors import one_line
from unimdm_jax.schema import ELEMENT_SYMBOLS

from .dataset import split_records

__all__ = ["DEFAULT_TABLE", "CompositionNeighbours", "main"]

DEFAULT_TABLE = Path(__file__).resolve().parent / "checkpoints" / "mp20_train_neighbours.npz"
_FORMAT = 1


class CompositionNeighbours:
    """``fractions``: (N, number of elements) element fractions; ``space_groups``: (N,) ints;
    ``values``: property name -> (N,) floats (NaN where unknown)."""

    def __init__(
        self,
        fractions: np.ndarray,
        space_groups: np.ndarray,
        values: dict[str, np.ndarray] | None = None,
        source: str = "",
    ):
        self.fractions = np.asarray(fractions, np.float32)
        self.space_groups = np.asarray(space_groups, np.int64)
        self.values = {k: np.asarray(v, np.float64) for k, v in (values or {}).items()}
        self.source = source
        if self.fractions.ndim != 2 or len(self.fractions) != len(self.space_groups):
            raise ValueError("fractions must be (N, elements) with one space group per row")

    def __len__(self) -> int:
        return len(self.space_groups)

    # ------------------------------------------------------------------ building, I/O

    @classmethod
    def from_records(
        cls, records, property_names=("band_gap", "formation_energy_per_atom"), source: str = ""
    ):
        """From symmetry schema records (e.g. ``llm_torch.dataset.split_records("train")``)."""

        index = {e: i for i, e in enumerate(ELEMENT_SYMBOLS)}
        records = list(records)
        fractions = np.zeros((len(records), len(ELEMENT_SYMBOLS)), np.float32)
        values = {name: np.full(len(records), np.nan) for name in property_names}
        for i, r in enumerate(records):
            total = sum(r.composition.counts.values())
            for e, n in r.composition.counts.items():
                fractions[i, index[e]] = n / total
            for name in property_names:
                v = r.property(name)
                values[name][i] = np.nan if v is None else v
        groups = np.array([r.space_group.number for r in records], np.int64)
        return cls(fractions, groups, values, source)

    def save(self, path: str | Path) -> Path:
        rows, cols = np.nonzero(self.fractions)
        offsets = np.searchsorted(rows, np.arange(len(self) + 1)).astype(np.int32)
        arrays = {
            "format": np.array(_FORMAT),
            "offsets": offsets,
            "elements": cols.astype(np.int16),
            "fractions": self.fractions[rows, cols].astype(np.float32),
            "space_groups": self.space_groups.astype(np.int16),
            "n_elements": np.array(self.fractions.shape[1]),
            "source": np.array(self.source),
        }
        for name, v in self.values.items():
            arrays[f"value:{name}"] = v.astype(np.float32)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CompositionNeighbours:
        """Read a table written by :meth:`save`; ``ValueError`` (one line) if it is missing or corrupt."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != _FORMAT:
                    raise ValueError(f"format {int(data['format'])}, expected {_FORMAT}")
                offsets, elements, parts = data["offsets"], data["elements"], data["fractions"]
                n = len(offsets) - 1
                fractions = np.zeros((n, int(data["n_elements"])), np.float32)
                rows = np.repeat(np.arange(n), np.diff(offsets))
                fractions[rows, elements.astype(np.int64)] = parts
                values = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("value:")}
                return cls(fractions, data["space_groups"], values, str(data["source"]))
        except (OSError, KeyError, ValueError, IndexError, EOFError) as error:
            message = one_line(error)
            raise ValueError(f"cannot read composition table {path}: {message}") from None

    # ------------------------------------------------------------------ queries

    def vector(self, counts: dict[str, int]) -> np.ndarray:
        v = np.zeros(self.fractions.shape[1], np.float32)
        total = sum(counts.values())
        for e, n in counts.items():
            v[ELEMENT_SYMBOLS.index(e)] += n / total
        return v

    def distances(self, counts: dict[str, int]) -> np.ndarray:
        """L1 distance of element fractions from ``counts`` to every training crystal
        (0 = same reduced formula)."""
        return np.abs(self.fractions - self.vector(counts)).sum(1)

    def nearest(
        self, counts: dict[str, int], k: int, property_name: str | None = None, target: float | None = None
    ) -> np.ndarray:
        """Indices of the ``k`` nearest training crystals, nearest first; equal distances (to 1e-6,
        float32 fractions) ordered by ``|value - target|`` of ``property_name`` (unknown values last),
        then by index."""
        return self._nearest(self.distances(counts), k, property_name, target)

    def _nearest(
        self, distances: np.ndarray, k: int, property_name: str | None, target: float | None
    ) -> np.ndarray:
        d = np.round(distances.astype(np.float64), 6)
        k = min(k, len(d))
        if k == 0:
            return np.zeros(0, np.int64)
        bound = np.partition(d, k - 1)[k - 1]
        pool = np.flatnonzero(d <= bound)  # every crystal tied with the k-th, not an arbitrary subset
        gap = np.zeros(len(pool))
        if property_name is not None and target is not None:
            values = self.values.get(property_name)  # a table without this property: every value unknown
            if values is not None:
                gap = np.abs(values[pool] - float(target))
                gap = np.where(np.isnan(gap), np.inf, gap)
        return pool[np.lexsort((pool, gap, d[pool]))][:k]

    def space_group_prior(
        self,
        counts: dict[str, int],
        k: int = 50,
        tau: float = 0.05,
        property_name: str | None = None,
        target: float | None = None,
    ) -> dict[int, float]:
        """``p_nn(g)`` (module docstring): kernel weights of the ``k`` nearest crystals (:meth:`nearest`),
        summed per group."""
        d = self.distances(counts)
        nearest = self._nearest(d, k, property_name, target)
        if len(nearest) == 0:
            return {}
        weights = np.exp(-(d[nearest] - d[nearest].min()) / tau)  # shifted for range; cancels in the ratio
        total = float(weights.sum())
        prior: dict[int, float] = defaultdict(float)
        for j, w in zip(nearest, weights):
            prior[int(self.space_groups[j])] += float(w) / total
        return dict(prior)

    def log_prior(
        self,
        counts: dict[str, int],
        groups,
        *,
        k: int = 50,
        tau: float = 0.05,
        floor: float = 1e-3,
        property_name: str | None = None,
        target: float | None = None,
    ) -> dict[int, float]:
        """``log(p_nn(g) + floor)`` for each group in ``groups`` (the floor keeps unseen groups possible)."""
        prior = self.space_group_prior(counts, k, tau, property_name, target)
        return {g: math.log(prior.get(g, 0.0) + floor) for g in groups}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_torch.neighbours", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--split", default="train", help="MP-20 policy split (default train)")
    parser.add_argument("--out", default=str(DEFAULT_TABLE))
    args = parser.parse_args(argv)

    try:
        records = split_records(args.split)
    except (ValueError, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    table = CompositionNeighbours.from_records(
        records, source=f"MP-20 policy split {args.split!r} ({len(records)} crystals)"
    )
    path = table.save(args.out)
    print(f"wrote {len(table)} crystals to {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
