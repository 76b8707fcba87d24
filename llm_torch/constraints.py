"""Validity layer of the symmetry predictor: compositions, Wyckoff feasibility, repair, grammar.

Everything here is pure Python (no torch); the transformers ``LogitsProcessor`` that applies
:class:`OutputGrammar` during generation lives in :mod:`llm_torch.decoding`.

Compositions (:func:`parse_composition`)
    ``cell`` mode: the counts are the conventional cell's atoms and are respected exactly
    (``Li4Fe4P4O16``; rock salt is ``Na4Cl4``). ``reduced`` mode: only the ratio is fixed
    (``LiFePO4``); the cell holds ``m`` times the reduced formula for some ``m >= 1`` with at
    most ``max_atoms`` atoms (default 80, the largest conventional cell of MP-20), and the model
    (or the solver) chooses ``m``; the group's centring is respected automatically because every
    Wyckoff multiplicity is a multiple of the centring factor. ``auto`` (default): a formula
    whose counts have a common divisor > 1 is read as cell counts, otherwise as reduced.

Feasibility (:func:`feasible_assignments`, :func:`is_feasible`)
    An assignment gives each element a multiset of Wyckoff positions whose multiplicities add
    up to its count; a position with no free parameter (dof 0) holds at most one orbit overall,
    positions with free parameters any number. The exact test splits the positions: the dof-0
    ones are distributed by a memoised depth-first search over (position, remaining counts);
    what is left of each element must be a sum of free-position multiplicities (an unbounded
    subset-sum, precomputed as a bitmask).

Repair (:func:`repair`)
    Keeps the largest sub-multiset of the proposed orbits that can still be completed (drops
    tried in increasing number, exhaustively up to ``max_checks`` feasibility tests, then
    greedily), and fills the rest with a minimum-cost completion (by default fewest orbits,
    then earlier Wyckoff letters; a prior can set per-letter costs).

Grammar (:class:`OutputGrammar`)
    A character-level automaton of the output format of :mod:`llm_torch.prompts` for one
    composition: only feasible space-group lines, the group's fixed positions line, orbit lines
    in canonical order that can still be completed, and the closing JSON object once the counts
    are met. :meth:`OutputGrammar.allowed_tokens` walks a trie of the vocabulary's token texts.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unimdm_jax import schema
from unimdm_jax.schema import is_valid_element, space_group_symbol, wyckoff_positions

from . import prompts

__all__ = [
    "END",
    "CompositionError",
    "CompositionSpec",
    "InfeasibleError",
    "OutputGrammar",
    "RepairResult",
    "TokenTrie",
    "best_assignment",
    "check_assignment",
    "feasible_assignments",
    "feasible_space_groups",
    "is_feasible",
    "make_record",
    "parse_composition",
    "repair",
]

#: Largest conventional cell accepted in ``cell`` mode (MP-20's largest is 80).
MAX_CELL_ATOMS = 200
#: Default cap on the conventional cell when the model chooses the formula units (``reduced`` mode).
DEFAULT_MAX_ATOMS = 80
MAX_ELEMENTS = 12
_REACH_CAP = MAX_CELL_ATOMS + 1


class CompositionError(ValueError):
    """A formula that cannot be used (unknown element, empty, absurd). ``str()`` is one line."""


class InfeasibleError(ValueError):
    """No Wyckoff assignment exists for the given space group and composition."""


# ============================================================================ compositions


@dataclass(frozen=True)
class CompositionSpec:
    """What the user asked for: elements in formula order, counts and how to read them.

    ``mode == "cell"``: ``counts`` are conventional-cell counts (exact). ``mode == "reduced"``:
    ``counts`` are the reduced formula; the cell holds ``m * counts`` with
    ``m * sum(counts) <= max_atoms`` (see :attr:`options`).
    """

    elements: tuple[str, ...]
    counts: tuple[int, ...]
    mode: str = "cell"
    max_atoms: int = DEFAULT_MAX_ATOMS

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], mode: str = "cell", max_atoms: int = DEFAULT_MAX_ATOMS):
        elements = tuple(counts)
        values = tuple(int(counts[e]) for e in elements)
        if mode == "reduced":
            g = math.gcd(*values) or 1
            values = tuple(v // g for v in values)
        return cls(elements, values, mode, max_atoms)

    @property
    def options(self) -> tuple[tuple[int, ...], ...]:
        """The admissible cell-count vectors (one in ``cell`` mode, ``m = 1, 2, ...`` in ``reduced``)."""
        return _options(self.counts, self.mode, self.max_atoms)

    @property
    def count_dict(self) -> dict[str, int]:
        return dict(zip(self.elements, self.counts))

    @property
    def reduced_formula(self) -> str:
        return prompts.reduced_formula(self.count_dict)

    def __str__(self) -> str:
        if self.mode == "cell":
            return prompts.cell_formula(self.count_dict)
        return f"{self.reduced_formula} (reduced)"


@functools.cache
def _options(counts: tuple[int, ...], mode: str, max_atoms: int) -> tuple[tuple[int, ...], ...]:
    if mode == "cell":
        return (counts,)
    total = sum(counts)
    return tuple(tuple(m * c for c in counts) for m in range(1, max_atoms // total + 1))


_FORMULA_TOKEN = re.compile(
    r"\s*(?:(?P<el>[A-Z][a-z]?)|(?P<open>[(\[])|(?P<close>[)\]])|(?P<num>\d+(?:\.\d*)?))"
)


def _parse_formula(text: str) -> dict[str, int]:
    stack: list[dict[str, int]] = [{}]
    pos = 0
    last: dict[str, int] | str | None = None  # what a following number multiplies
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _FORMULA_TOKEN.match(text, pos)
        if not m:
            bad = text[pos:].lstrip()[:1]
            where = len(text) - len(text[pos:].lstrip())
            raise CompositionError(f"cannot parse formula {text!r}: unexpected {bad!r} at position {where}")
        pos = m.end()
        if m.group("el"):
            element = m.group("el")
            if not is_valid_element(element):
                raise CompositionError(f"unknown element {element!r} in formula {text!r}")
            stack[-1][element] = stack[-1].get(element, 0) + 1
            last = element
        elif m.group("open"):
            stack.append({})
            last = None
        elif m.group("close"):
            if len(stack) == 1:
                raise CompositionError(f"cannot parse formula {text!r}: unbalanced ')'")
            group = stack.pop()
            if not group:
                raise CompositionError(f"cannot parse formula {text!r}: empty parentheses")
            for element, n in group.items():
                stack[-1][element] = stack[-1].get(element, 0) + n
            last = group
        else:
            raw = m.group("num")
            if "." in raw:
                raise CompositionError(f"formula {text!r}: counts must be whole numbers, got {raw}")
            if last is None:
                raise CompositionError(f"cannot parse formula {text!r}: number {raw} without an element")
            if len(raw.lstrip("0")) > 6:
                raise CompositionError(f"formula {text!r}: count {raw} is too large")
            n = int(raw)
            if n < 1:
                raise CompositionError(f"formula {text!r}: counts must be >= 1, got {raw}")
            if isinstance(last, str):
                stack[-1][last] += n - 1
            else:
                for element, k in last.items():
                    stack[-1][element] += k * (n - 1)
            last = None
    if len(stack) != 1:
        raise CompositionError(f"cannot parse formula {text!r}: unbalanced '('")
    return stack[0]


def parse_composition(text: str, mode: str = "auto", max_atoms: int = DEFAULT_MAX_ATOMS) -> CompositionSpec:
    """Parse a formula (``LiFePO4``, ``Li4 Fe4 P4 O16``, ``Ca(OH)2``) into a :class:`CompositionSpec`.

    ``mode``: ``"cell"`` (counts are the conventional cell, kept exactly), ``"reduced"``
    (only the ratio counts; the cell is chosen as ``m`` formula units with at most
    ``max_atoms`` atoms) or ``"auto"`` (cell if the counts share a divisor > 1, else reduced).
    Repeated elements are summed. Raises :class:`CompositionError` (a ValueError, one line) for
    an empty or malformed formula, an unknown element, a zero, fractional or huge count, more than
    12 elements, or a cell larger than 200 atoms (``reduced``: a formula unit larger than
    ``max_atoms``).
    """
    if mode not in ("auto", "cell", "reduced"):
        raise CompositionError(f"composition mode must be auto, cell or reduced, got {mode!r}")
    if not isinstance(text, str) or not text.strip():
        raise CompositionError("empty formula")
    text = text.strip()
    counts = _parse_formula(text)
    if not counts:
        raise CompositionError(f"formula {text!r} names no element")
    if len(counts) > MAX_ELEMENTS:
        raise CompositionError(
            f"formula {text!r} has {len(counts)} elements; at most {MAX_ELEMENTS} are supported"
        )
    total = sum(counts.values())
    divisor = math.gcd(*counts.values())
    if mode == "auto":
        mode = "cell" if divisor > 1 else "reduced"
    if mode == "cell":
        if total > MAX_CELL_ATOMS:
            raise CompositionError(
                f"formula {text!r} has {total} atoms in the cell; at most {MAX_CELL_ATOMS} are supported"
            )
        return CompositionSpec(tuple(counts), tuple(counts.values()), "cell", max(max_atoms, total))
    reduced = tuple(n // divisor for n in counts.values())
    if sum(reduced) > max_atoms:
        raise CompositionError(
            f"formula {text!r} has {sum(reduced)} atoms per formula unit; at most {max_atoms} fit the cell"
        )
    return CompositionSpec(tuple(counts), reduced, "reduced", max_atoms)


def _as_spec(counts: Any) -> CompositionSpec:
    if isinstance(counts, CompositionSpec):
        return counts
    if isinstance(counts, str):
        return parse_composition(counts, "cell")
    if isinstance(counts, Mapping):
        return CompositionSpec.from_counts(counts, "cell")
    raise TypeError(f"expected a CompositionSpec, formula or dict of counts, got {type(counts).__name__}")


# ============================================================================ feasibility


@dataclass(frozen=True)
class _Table:
    letters: tuple[str, ...]
    mults: tuple[int, ...]
    dofs: tuple[int, ...]
    index: dict
    fixed: tuple[int, ...]  # indices of dof-0 positions
    variable: tuple[int, ...]  # indices of positions with free parameters


@functools.cache
def _table(sg: int) -> _Table:
    positions = wyckoff_positions(sg)
    return _Table(
        letters=tuple(p.letter for p in positions),
        mults=tuple(p.multiplicity for p in positions),
        dofs=tuple(p.dof for p in positions),
        index={p.letter: i for i, p in enumerate(positions)},
        fixed=tuple(i for i, p in enumerate(positions) if p.dof == 0),
        variable=tuple(i for i, p in enumerate(positions) if p.dof > 0),
    )


@functools.cache
def _var_reach(sg: int, start: int) -> int:
    """Bitmask of the sums (< _REACH_CAP) of free-position multiplicities with index >= start."""
    table = _table(sg)
    mask = (1 << _REACH_CAP) - 1
    reach = 1
    for i in table.variable:
        if i < start:
            continue
        m = table.mults[i]
        while True:
            new = (reach | (reach << m)) & mask
            if new == reach:
                break
            reach = new
    return reach


@functools.lru_cache(maxsize=500_000)
def _completable(sg: int, rem: tuple[int, ...], used: frozenset, cur: int, cur_min: int) -> bool:
    """Can the remaining counts ``rem`` be filled?

    Fixed (dof-0) positions in ``used`` are taken; element ``cur`` may use only positions with
    index >= ``cur_min`` (canonical order), the others any position.
    """
    if any(r < 0 for r in rem):
        return False
    if any(r >= _REACH_CAP for r in rem):
        return False
    table = _table(sg)
    avail = [i for i in table.fixed if i not in used]
    reach_all = _var_reach(sg, 0)
    reach_cur = _var_reach(sg, cur_min) if cur_min > 0 else reach_all
    n_el = len(rem)
    memo: dict = {}

    def var_ok(e: int, r: int) -> bool:
        return r == 0 or bool(((reach_cur if e == cur else reach_all) >> r) & 1)

    def rec(k: int, left: tuple[int, ...]) -> bool:
        key = (k, left)
        if key in memo:
            return memo[key]
        if k == len(avail):
            result = all(var_ok(e, left[e]) for e in range(n_el))
        else:
            i = avail[k]
            m = table.mults[i]
            result = rec(k + 1, left)
            if not result:
                for e in range(n_el):
                    if (
                        left[e] >= m
                        and (e != cur or i >= cur_min)
                        and rec(k + 1, left[:e] + (left[e] - m,) + left[e + 1 :])
                    ):
                        result = True
                        break
        memo[key] = result
        return result

    return rec(0, tuple(rem))


def _placed(sg: int, elements: Sequence[str], assignment: Iterable[tuple[str, str]]):
    """(counts per element, used fixed indices) of an assignment, or None if it breaks a rule."""
    table = _table(sg)
    element_index = {e: i for i, e in enumerate(elements)}
    counts = [0] * len(elements)
    used = set()
    for element, letter in assignment:
        if element not in element_index or letter not in table.index:
            return None
        li = table.index[letter]
        if table.dofs[li] == 0:
            if li in used:
                return None
            used.add(li)
        counts[element_index[element]] += table.mults[li]
    return counts, used


def is_feasible(sg: int, counts: Any) -> bool:
    """Does ``sg`` admit a Wyckoff assignment for ``counts`` (dict of cell counts or a spec)?"""
    spec = _as_spec(counts)
    return any(_completable(sg, option, frozenset(), 0, 0) for option in spec.options)


def feasible_space_groups(counts: Any, candidates: Iterable[int] = range(1, 231)) -> list[int]:
    """The groups (in number order) that admit at least one assignment."""
    spec = _as_spec(counts)
    return [sg for sg in candidates if is_feasible(sg, spec)]


def feasible_assignments(sg: int, counts: Any, limit: int | None = 100) -> list[tuple[tuple[str, str], ...]]:
    """Wyckoff assignments of ``counts`` in space group ``sg`` (empty list iff none exists).

    Each assignment is a tuple of ``(element, letter)`` in canonical order (formula order, then
    letter order); at most ``limit`` are listed (None: all, which can be many for big cells in
    low-symmetry groups). Every step of the enumeration is pruned by the exact feasibility
    test, so listing costs time proportional to the output.
    """
    spec = _as_spec(counts)
    table = _table(sg)
    out: list[tuple[tuple[str, str], ...]] = []
    n_pos = len(table.letters)

    def dfs(option, placed, rem, used, cur, cur_min):
        if limit is not None and len(out) >= limit:
            return
        while cur < len(rem) and rem[cur] == 0:
            cur, cur_min = cur + 1, 0
        if cur == len(rem):
            out.append(tuple((spec.elements[e], table.letters[li]) for e, li in placed))
            return
        for li in range(cur_min, n_pos):
            m = table.mults[li]
            if m > rem[cur]:
                continue
            fixed = table.dofs[li] == 0
            if fixed and li in used:
                continue
            rem2 = rem[:cur] + (rem[cur] - m,) + rem[cur + 1 :]
            used2 = used | {li} if fixed else used
            if _completable(sg, rem2, used2, cur, li):
                dfs(option, placed + ((cur, li),), rem2, used2, cur, li)

    for option in spec.options:
        if _completable(sg, option, frozenset(), 0, 0):
            dfs(option, (), option, frozenset(), 0, 0)
        if limit is not None and len(out) >= limit:
            break
    return out


def check_assignment(sg: int, counts: Any, assignment: Sequence[tuple[str, str]]) -> bool:
    """Is ``assignment`` a valid assignment of (one option of) ``counts`` in ``sg``?"""
    spec = _as_spec(counts)
    if not 1 <= int(sg) <= 230 or not assignment:
        return False
    placed = _placed(sg, spec.elements, assignment)
    if placed is None:
        return False
    return tuple(placed[0]) in spec.options


# ============================================================================ repair


def _position_costs(sg: int, prior: Mapping | None) -> tuple[float, ...]:
    """Cost of one orbit on each position: 1 (fewest orbits) + a small letter-order tie break,
    or ``prior[sg][letter]`` (e.g. minus log frequency) when given."""
    table = _table(sg)
    costs = [1.0 + 1e-3 * i for i in range(len(table.letters))]
    if prior is not None and sg in prior:
        for i, letter in enumerate(table.letters):
            if letter in prior[sg]:
                costs[i] = float(prior[sg][letter]) + 1e-6 * i
    return tuple(costs)


def _min_cost_fill(sg: int, rem: tuple[int, ...], used: frozenset, costs: tuple[float, ...]):
    """Cheapest completion of ``rem`` (no order restriction): (cost, [(element index, position)]) or None."""
    table = _table(sg)
    top = max(rem) if rem else 0
    inf = math.inf
    # unbounded knapsack over free positions: best[r] = (cost, last position)
    best: list[tuple[float, int]] = [(0.0, -1)] + [(inf, -1)] * top
    for r in range(1, top + 1):
        for i in table.variable:
            m = table.mults[i]
            if m <= r and best[r - m][0] + costs[i] < best[r][0]:
                best[r] = (best[r - m][0] + costs[i], i)
    avail = [i for i in table.fixed if i not in used]
    memo: dict = {}

    def rec(k, left):
        key = (k, left)
        if key in memo:
            return memo[key]
        if k == len(avail):
            total = sum(best[r][0] for r in left)
            result = (total, ())
        else:
            i = avail[k]
            m = table.mults[i]
            result = rec(k + 1, left)
            for e in range(len(left)):
                if left[e] >= m:
                    sub = rec(k + 1, left[:e] + (left[e] - m,) + left[e + 1 :])
                    if sub[0] + costs[i] < result[0]:
                        result = (sub[0] + costs[i], ((e, i),) + sub[1])
        memo[key] = result
        return result

    cost, fixed_choice = rec(0, tuple(rem))
    if not math.isfinite(cost):
        return None
    left = list(rem)
    choice = list(fixed_choice)
    for e, i in fixed_choice:
        left[e] -= table.mults[i]
    for e, r in enumerate(left):
        while r > 0:
            i = best[r][1]
            choice.append((e, i))
            r -= table.mults[i]
    return cost, choice


@dataclass(frozen=True)
class RepairResult:
    """A valid assignment close to a proposal. ``repaired`` is False when the proposal was already valid."""

    space_group: int
    counts: dict[str, int]
    assignment: tuple[tuple[str, str], ...]  # canonical order
    repaired: bool
    kept: tuple[tuple[str, str], ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()
    added: tuple[tuple[str, str], ...] = ()

    def to_record(self, properties: Iterable = (), **provenance) -> Any:
        return make_record(self.space_group, self.counts, self.assignment, properties, **provenance)


def _keep_max(sg, elements, option, proposed, max_checks):
    """Largest completable sub-list of ``proposed`` (list of (element index, position))."""
    table = _table(sg)

    def ok(subset) -> bool:
        rem = list(option)
        used = set()
        for e, i in subset:
            rem[e] -= table.mults[i]
            if rem[e] < 0:
                return False
            if table.dofs[i] == 0:
                if i in used:
                    return False
                used.add(i)
        return _completable(sg, tuple(rem), frozenset(used), 0, 0)

    n = len(proposed)
    checks = 0
    for d in range(n + 1):
        for drop in itertools.combinations(range(n - 1, -1, -1), d):
            checks += 1
            if checks > max_checks:
                break
            dropset = set(drop)
            subset = [p for j, p in enumerate(proposed) if j not in dropset]
            if ok(subset):
                return subset
        if checks > max_checks:
            break
    kept: list = []  # greedy fallback, in proposal order
    for p in proposed:
        if ok(kept + [p]):
            kept.append(p)
    return kept if ok(kept) else None


def repair(
    sg: int,
    counts: Any,
    proposed: Sequence[tuple[str, str]],
    *,
    prior: Mapping | None = None,
    max_checks: int = 5000,
) -> RepairResult:
    """Closest valid assignment to ``proposed`` in group ``sg`` for ``counts``.

    Orbits naming an element outside the composition or a letter the group lacks are dropped
    first; then the largest completable sub-multiset is kept and the rest is filled with the
    minimum-cost completion (see :func:`_position_costs`). For a ``reduced`` spec every
    admissible cell (formula units) is tried and the one keeping most orbits wins.
    Raises :class:`InfeasibleError` when ``sg`` admits no assignment at all.
    """
    spec = _as_spec(counts)
    sg = int(sg)
    if not 1 <= sg <= 230:
        raise InfeasibleError(f"space group {sg} is not in 1-230")
    table = _table(sg)
    element_index = {e: i for i, e in enumerate(spec.elements)}
    proposed = [(str(e), str(letter)) for e, letter in proposed]
    usable = [
        (element_index[e], table.index[letter])
        for e, letter in proposed
        if e in element_index and letter in table.index
    ]
    costs = _position_costs(sg, prior)
    best = None
    for option in spec.options:
        if not _completable(sg, option, frozenset(), 0, 0):
            continue
        kept = _keep_max(sg, spec.elements, option, usable, max_checks)
        if kept is None:
            continue
        rem = list(option)
        used = set()
        for e, i in kept:
            rem[e] -= table.mults[i]
            if table.dofs[i] == 0:
                used.add(i)
        filled = _min_cost_fill(sg, tuple(rem), frozenset(used), costs)
        if filled is None:  # pragma: no cover - completable guarantees a fill
            continue
        key = (len(kept), -filled[0])
        if best is None or key > best[0]:
            best = (key, option, kept, filled[1])
    if best is None:
        raise InfeasibleError(
            f"space group {sg} ({space_group_symbol(sg)}) admits no Wyckoff assignment for {spec}"
        )
    _, option, kept, fill = best

    def names(pairs):
        return tuple((spec.elements[e], table.letters[i]) for e, i in pairs)

    assignment = tuple(prompts.sort_assignment(sg, names(kept) + names(fill), spec.elements))
    repaired = Counter(assignment) != Counter(proposed)
    kept_names = names(kept)
    dropped = list((Counter(proposed) - Counter(kept_names)).elements())
    return RepairResult(
        space_group=sg,
        counts=dict(zip(spec.elements, option)),
        assignment=assignment,
        repaired=repaired,
        kept=kept_names,
        dropped=tuple(dropped),
        added=names(fill),
    )


def best_assignment(sg: int, counts: Any, prior: Mapping | None = None) -> RepairResult:
    """The solver's own assignment (no proposal): minimum cost, e.g. NaCl in 225 -> Na 4a, Cl 4b."""
    return repair(sg, counts, (), prior=prior)


def make_record(
    sg: int,
    counts: Mapping[str, int],
    assignment: Sequence[tuple[str, str]],
    properties: Iterable = (),
    *,
    source: str = "stage1",
    id: str | None = None,
    model: str | None = None,
    score: float | None = None,
    rank: int | None = None,
):
    """A validated :class:`unimdm_jax.schema.SymmetryRecord` (raises ``SchemaError`` if invalid).

    ``properties``: ``schema.Property`` objects or ``(name, value)`` pairs (unit filled in).
    """

    table = _table(sg)
    props = []
    for p in properties:
        if isinstance(p, schema.Property):
            props.append(p)
        else:
            name, value = p
            props.append(schema.Property(name, float(value), schema.KNOWN_PROPERTY_UNITS.get(name, "")))
    record = schema.SymmetryRecord(
        composition=schema.Composition(dict(counts)),
        space_group=schema.SpaceGroup(int(sg), space_group_symbol(sg)),
        wyckoff=tuple(
            schema.WyckoffEntry(e, letter, table.mults[table.index[letter]]) for e, letter in assignment
        ),
        properties=tuple(props),
        provenance=schema.Provenance(source=source, id=id, model=model, score=score, rank=rank),
    )
    return schema.validate_record(record)


# ============================================================================ grammar

#: Marker for "this line ends the output" (the JSON object): only EOS may follow.
END = ("end",)


@dataclass
class _Lines:
    keys: list[str]  # sorted
    next: dict[str, tuple]


class OutputGrammar:
    """Character-level automaton of the output format (see :mod:`llm_torch.prompts`) for one
    composition. States: ``("sg",)`` -> ``("pos", sg)`` -> ``("orb", sg, placed)`` -> :data:`END`.
    """

    START = ("sg",)

    def __init__(
        self, spec: CompositionSpec | Mapping[str, int] | str, space_groups: Iterable[int] | None = None
    ):
        self.spec = _as_spec(spec)
        candidates = range(1, 231) if space_groups is None else sorted({int(g) for g in space_groups})
        self.groups = tuple(feasible_space_groups(self.spec, candidates))
        if not self.groups:
            raise InfeasibleError(f"no space group admits a Wyckoff assignment for {self.spec}")
        self._lines: dict[tuple, _Lines] = {}
        self._allowed_cache: dict = {}

    # ---------------------------------------------------------------- lines per state

    def lines(self, state: tuple) -> _Lines:
        cached = self._lines.get(state)
        if cached is None:
            cached = self._compute_lines(state)
            self._lines[state] = cached
        return cached

    def _compute_lines(self, state: tuple) -> _Lines:
        nxt: dict[str, tuple] = {}
        if state == END:
            pass
        elif state[0] == "sg":
            for g in self.groups:
                nxt[prompts.space_group_line(g)] = ("pos", g)
        elif state[0] == "pos":
            nxt[prompts.positions_line(state[1])] = ("orb", state[1], ())
        elif state[0] == "orb":
            nxt = self._orbit_lines(state[1], state[2])
        return _Lines(sorted(nxt), nxt)

    def _orbit_lines(self, sg: int, placed: tuple) -> dict[str, tuple]:
        table = _table(sg)
        n_el = len(self.spec.elements)
        counts = [0] * n_el
        used = set()
        for e, li in placed:
            counts[e] += table.mults[li]
            if table.dofs[li] == 0:
                used.add(li)
        cur, last = placed[-1] if placed else (-1, -1)
        options = [
            c
            for c in self.spec.options
            if all(counts[e] <= c[e] for e in range(n_el))
            and all(counts[e] == c[e] for e in range(max(cur, 0)))
        ]
        out: dict[str, tuple] = {}
        for e in (cur, cur + 1):
            if e < 0 or e >= n_el:
                continue
            for li in range(last if e == cur else 0, len(table.letters)):
                fixed = table.dofs[li] == 0
                if fixed and li in used:
                    continue
                new_counts = counts.copy()
                new_counts[e] += table.mults[li]
                used2 = frozenset(used | {li}) if fixed else frozenset(used)
                for c in options:
                    if new_counts[e] > c[e]:
                        continue
                    if e == cur + 1 and cur >= 0 and counts[cur] != c[cur]:
                        continue
                    rem = tuple(c[i] - new_counts[i] for i in range(n_el))
                    if _completable(sg, rem, used2, e, li):
                        line = prompts.orbit_line(self.spec.elements[e], table.letters[li], sg)
                        out[line] = ("orb", sg, placed + ((e, li),))
                        break
        if placed and any(all(counts[e] == c[e] for e in range(n_el)) for c in options):
            assignment = [(self.spec.elements[e], table.letters[li]) for e, li in placed]
            out[prompts.json_line(sg, assignment)] = END
        return out

    # ---------------------------------------------------------------- character level

    def is_prefix(self, state: tuple, partial: str) -> bool:
        """Is ``partial`` the beginning of some allowed line in ``state``?"""
        keys = self.lines(state).keys
        j = bisect.bisect_left(keys, partial)
        return j < len(keys) and keys[j].startswith(partial)

    def feed(self, state: tuple, partial: str, text: str):
        """Advance by ``text``; ``(state, partial)`` or None when it leaves the language."""
        for ch in text:
            if ch == "\n":
                nxt = self.lines(state).next.get(partial)
                if nxt is None or nxt == END:
                    return None
                state, partial = nxt, ""
            else:
                partial += ch
                if not self.is_prefix(state, partial):
                    return None
        return state, partial

    def consume(self, text: str, state: tuple | None = None):
        """``(state, partial line)`` after ``text`` from ``state`` (default: start), or None."""
        return self.feed(self.START if state is None else state, "", text)

    def is_complete(self, state: tuple, partial: str) -> bool:
        """True when the output may stop here (the JSON line is finished)."""
        return self.lines(state).next.get(partial) == END

    def accepts(self, text: str) -> bool:
        """Is ``text`` a complete output of this grammar?"""
        result = self.consume(text)
        return result is not None and self.is_complete(*result)

    def allowed_tokens(self, state: tuple, partial: str, trie: TokenTrie) -> list[int]:
        """Token ids whose text keeps the output in the language (EOS when complete)."""
        key = (state, partial, id(trie))
        cached = self._allowed_cache.get(key)
        if cached is not None:
            return cached
        allowed: list[int] = []
        stack = [(trie.root, state, partial)]
        while stack:
            node, st, part = stack.pop()
            for ch, child in node.children.items():
                if ch == "\n":
                    nxt = self.lines(st).next.get(part)
                    if nxt is None or nxt == END:
                        continue
                    new = (nxt, "")
                else:
                    p2 = part + ch
                    if not self.is_prefix(st, p2):
                        continue
                    new = (st, p2)
                allowed.extend(child.ids)
                if child.children:
                    stack.append((child, *new))
        if self.is_complete(state, partial) and trie.eos_token_id is not None:
            allowed.append(trie.eos_token_id)
        if len(self._allowed_cache) > 20000:
            self._allowed_cache.clear()
        self._allowed_cache[key] = allowed
        return allowed

    def max_new_chars(self) -> int:
        """Upper bound on the characters of an output (used for ``max_new_tokens``)."""
        atoms = max(sum(c) for c in self.spec.options)
        return 200 + 330 + atoms * (10 + 60)


#: Characters a token may contain to be usable by the grammar.
_ALPHABET = frozenset(chr(c) for c in range(32, 127)) | {"\n"}


class _Node:
    __slots__ = ("children", "ids")

    def __init__(self):
        self.children: dict[str, _Node] = {}
        self.ids: list[int] = []


class TokenTrie:
    """Character trie of a vocabulary's token texts (printable ASCII + newline only)."""

    def __init__(self, token_texts: Mapping[int, str], eos_token_id: int | None = None):
        self.root = _Node()
        self.eos_token_id = eos_token_id
        self.texts = dict(token_texts)
        for token_id, text in token_texts.items():
            if not text or any(ch not in _ALPHABET for ch in text):
                continue
            node = self.root
            for ch in text:
                node = node.children.setdefault(ch, _Node())
            node.ids.append(token_id)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenTrie:
        """Trie of a Hugging Face tokenizer (special tokens left out; cached on the tokenizer)."""
        cached = getattr(tokenizer, "_unimdm_token_trie", None)
        if cached is not None:
            return cached
        texts = token_texts(tokenizer)
        trie = cls(texts, tokenizer.eos_token_id)
        try:
            tokenizer._unimdm_token_trie = trie
        except AttributeError:  # pragma: no cover
            pass
        return trie


def token_texts(tokenizer: Any) -> dict[int, str]:
    """id -> decoded text of every non-special token (``decode([id])``)."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = {}
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        out[token_id] = tokenizer.decode(
            [token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
    return out
