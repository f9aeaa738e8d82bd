"""A continual-learning scenario: an ordered sequence of experiences, checked once when built.

The vocabulary follows Lomonaco & Maltoni (2017), CORe50: in an *NI* scenario every experience
holds new instances of the same classes, in *NC* each experience brings classes not seen before,
in *NIC* both happen. The *offline* scenario is the retraining baseline: one experience with all
training data at once (:meth:`Scenario.offline`).

An :class:`Experience` is what one CL update step trains on and what is evaluated after it. The
inputs are a float32 tensor ``[N, ...]`` (images ``[N, C, H, W]``, tabular rows ``[N, F]``) or,
for text, a ``list[str]`` of N documents; labels are an int64 tensor ``[N]`` indexing
``Scenario.class_names``.

Validation runs in ``__post_init__`` and raises ``ValueError`` naming the problem: empty splits,
labels outside ``class_names``, inputs of the wrong type or shape, and any source sample used in a
train split and a test split anywhere in the scenario (a leak that would inflate every accuracy
measured on it, the offline baseline's included).

References:
    V. Lomonaco, D. Maltoni. CORe50: a New Dataset and Benchmark for Continuous Object
    Recognition. CoRL 2017 (PMLR 78:17-26).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor

ScenarioKind = Literal["ni", "nc", "nic", "offline"]
InputKind = Literal["image", "text", "tabular"]
Inputs = Tensor | list[str]

SCENARIO_KINDS: tuple[str, ...] = get_args(ScenarioKind)
INPUT_KINDS: tuple[str, ...] = get_args(InputKind)


def _row_digests(inputs: Inputs) -> set[bytes]:
    """A 16-byte digest of every row's content (the bytes of a tensor row, or the UTF-8 text)."""
    if isinstance(inputs, Tensor):
        rows = (row.tobytes() for row in inputs.reshape(len(inputs), -1).numpy())
    else:
        rows = (text.encode("utf-8") for text in inputs)
    return {hashlib.blake2b(row, digest_size=16).digest() for row in rows}


def _concat(parts: Sequence[Inputs]) -> Inputs:
    if isinstance(parts[0], Tensor):
        return torch.cat(list(parts))
    return [text for part in parts for text in part]


@dataclass(frozen=True, eq=False)
class Experience:
    """One step of a scenario: the data trained on, and the data evaluated, at that step.

    Parameters:
        index: position in the scenario, 0-based.
        train_x: training inputs; float32 tensor ``[N, ...]``, or ``list[str]`` of N texts.
        train_y: training labels, int64 tensor ``[N]`` (indices into ``Scenario.class_names``).
        test_x: test inputs, same type and per-row shape as ``train_x``.
        test_y: test labels, int64 tensor ``[M]``.
        classes: the labels present in ``train_y``, sorted; ``test_y`` may only use these.
        domain: name of the input distribution (``"rotation=30deg"``, ``"imdb"``, ``"sea:0"``).
        train_ids: optional int64 ``[N]``: the position of every training row in its source (data
            set row or stream position). With ids, leakage is checked by id as well as content.
        test_ids: optional int64 ``[M]``, the same for the test rows.

    Examples:
        >>> import torch
        >>> exp = Experience(0, torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]),
        ...                  torch.ones(2, 2), torch.tensor([0, 1]), (0, 1), "all")
        >>> exp.n_train, exp.n_test
        (4, 2)
        >>> Experience(0, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64),
        ...            torch.ones(2, 2), torch.tensor([0, 1]), (0, 1), "all")
        Traceback (most recent call last):
        ...
        ValueError: experience 0: train split is empty
    """

    index: int
    train_x: Inputs = field(repr=False)
    train_y: Tensor = field(repr=False)
    test_x: Inputs = field(repr=False)
    test_y: Tensor = field(repr=False)
    classes: tuple[int, ...]
    domain: str
    train_ids: Tensor | None = field(default=None, repr=False)
    test_ids: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        where = f"experience {self.index}"
        if self.index < 0:
            raise ValueError(f"{where}: index must be >= 0")
        for split, x, y, ids in (
            ("train", self.train_x, self.train_y, self.train_ids),
            ("test", self.test_x, self.test_y, self.test_ids),
        ):
            if not isinstance(x, Tensor | list):
                raise ValueError(f"{where}: {split}_x must be a Tensor or a list[str]")
            if isinstance(x, Tensor) and x.dtype != torch.float32:
                raise ValueError(f"{where}: {split}_x must be float32 (got {x.dtype})")
            if isinstance(x, list) and not all(isinstance(text, str) for text in x):
                raise ValueError(f"{where}: {split}_x must hold only str")
            if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1:
                raise ValueError(f"{where}: {split}_y must be a 1-D int64 tensor")
            if len(x) != len(y):
                raise ValueError(f"{where}: {split}_x has {len(x)} rows, {split}_y {len(y)}")
            if len(y) == 0:
                raise ValueError(f"{where}: {split} split is empty")
            if ids is not None and (ids.dtype != torch.int64 or ids.shape != y.shape):
                raise ValueError(f"{where}: {split}_ids must be int64 with one id per row")
        if type(self.train_x) is not type(self.test_x):
            raise ValueError(f"{where}: train_x and test_x must be of the same type")
        if (self.train_ids is None) != (self.test_ids is None):
            raise ValueError(f"{where}: give both train_ids and test_ids, or neither")
        present = tuple(sorted(set(self.train_y.tolist())))
        if tuple(self.classes) != present:
            raise ValueError(
                f"{where}: classes {tuple(self.classes)} differ from the labels in train_y "
                f"{present}"
            )
        unseen = set(self.test_y.tolist()) - set(present)
        if unseen:
            raise ValueError(f"{where}: test_y holds labels {sorted(unseen)} absent from train_y")

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return len(self.train_y)

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return len(self.test_y)


@dataclass(frozen=True, eq=False)
class Scenario:
    """An ordered, validated sequence of experiences over one label space.

    Parameters:
        name: registry name (``"split-mnist"``) or a free name.
        kind: ``"ni"`` (every experience has the same classes), ``"nc"`` (pairwise disjoint class
            sets), ``"nic"`` (new and known classes mixed) or ``"offline"`` (exactly one
            experience).
        experiences: the experiences; ``experiences[k].index == k``.
        class_names: name of every label; labels are ``0 .. len(class_names) - 1``.
        input_shape: shape of one input: ``(C, H, W)`` for images, ``(F,)`` for tabular rows,
            ``()`` for text (one string).
        input_kind: ``"image"``, ``"text"`` or ``"tabular"``.
        seed: the seed the scenario was built with (same seed, same tensors).

    Examples:
        >>> import torch
        >>> def exp(k, labels, value):
        ...     y = torch.tensor(labels)
        ...     return Experience(k, torch.full((len(y), 3), value), y,
        ...                       torch.full((len(y), 3), -value), y, tuple(sorted(set(labels))),
        ...                       f"d{k}")
        >>> sc = Scenario("toy", "nc", (exp(0, [0, 1], 1.0), exp(1, [2, 3], 2.0)),
        ...               ("a", "b", "c", "d"), (3,), "tabular", 0)
        >>> [e.classes for e in sc.experiences]
        [(0, 1), (2, 3)]
        >>> off = sc.offline()
        >>> off.kind, len(off.experiences), off.experiences[0].n_train, off.experiences[0].domain
        ('offline', 1, 4, 'd0+d1')
        >>> Scenario("bad", "nc", (exp(0, [0, 1], 1.0), exp(1, [1, 2], 2.0)),
        ...          ("a", "b", "c", "d"), (3,), "tabular", 0)
        Traceback (most recent call last):
        ...
        ValueError: scenario 'bad' (nc): experiences 0 and 1 share classes [1]
    """

    name: str
    kind: ScenarioKind
    experiences: tuple[Experience, ...]
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_kind: InputKind
    seed: int

    def __post_init__(self) -> None:
        where = f"scenario '{self.name}' ({self.kind})"
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"{where}: kind must be one of {SCENARIO_KINDS}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"{where}: input_kind must be one of {INPUT_KINDS}")
        if not self.experiences:
            raise ValueError(f"{where}: has no experience")
        if len(self.class_names) < 2:
            raise ValueError(f"{where}: class_names must name at least 2 classes")
        if self.input_kind == "text" and tuple(self.input_shape) != ():
            raise ValueError(f"{where}: input_shape of text must be ()")
        if len({exp.train_ids is None for exp in self.experiences}) > 1:
            raise ValueError(f"{where}: give train_ids/test_ids in every experience or in none")
        for k, exp in enumerate(self.experiences):
            self._check_experience(where, k, exp)
        self._check_kind(where)
        self._check_no_leak(where)

    def _check_experience(self, where: str, k: int, exp: Experience) -> None:
        if exp.index != k:
            raise ValueError(f"{where}: experience at position {k} has index {exp.index}")
        for split, x, y in (("train", exp.train_x, exp.train_y), ("test", exp.test_x, exp.test_y)):
            if y.min() < 0 or y.max() >= len(self.class_names):
                raise ValueError(
                    f"{where}: experience {k} {split}_y has labels outside class_names "
                    f"(0 .. {len(self.class_names) - 1})"
                )
            if self.input_kind == "text":
                if not isinstance(x, list):
                    raise ValueError(f"{where}: text inputs must be list[str] ({split}_x)")
            elif not isinstance(x, Tensor) or tuple(x.shape[1:]) != tuple(self.input_shape):
                shape = tuple(x.shape[1:]) if isinstance(x, Tensor) else "a list"
                raise ValueError(
                    f"{where}: experience {k} {split}_x rows are {shape}, "
                    f"input_shape is {tuple(self.input_shape)}"
                )

    def _check_kind(self, where: str) -> None:
        class_sets = [set(exp.classes) for exp in self.experiences]
        if self.kind == "offline" and len(self.experiences) != 1:
            raise ValueError(f"{where}: an offline scenario has exactly one experience")
        if self.kind == "ni":
            for k, classes in enumerate(class_sets[1:], start=1):
                if classes != class_sets[0]:
                    raise ValueError(
                        f"{where}: experience {k} has classes {sorted(classes)}, experience 0 "
                        f"{sorted(class_sets[0])}; NI needs the same classes in every experience"
                    )
        if self.kind == "nc":
            for i, first in enumerate(class_sets):
                for j in range(i + 1, len(class_sets)):
                    shared = first & class_sets[j]
                    if shared:
                        raise ValueError(
                            f"{where}: experiences {i} and {j} share classes {sorted(shared)}"
                        )

    def _check_no_leak(self, where: str) -> None:
        exps = self.experiences
        if exps[0].train_ids is not None:
            train_ids = set(torch.cat([exp.train_ids for exp in exps]).tolist())
            test_ids = set(torch.cat([exp.test_ids for exp in exps]).tolist())
            both = train_ids & test_ids
            if both:
                raise ValueError(
                    f"{where}: {len(both)} source ids are in a train and a test split "
                    f"(e.g. {min(both)})"
                )
        # Tabular streams may repeat rows legitimately (STAGGER has 27 distinct rows), so for them
        # only ids can tell a leak from a coincidence.
        if self.input_kind != "tabular":
            train_rows = set().union(*(_row_digests(exp.train_x) for exp in exps))
            test_rows = set().union(*(_row_digests(exp.test_x) for exp in exps))
            both = train_rows & test_rows
            if both:
                raise ValueError(f"{where}: {len(both)} inputs are in a train and a test split")

    @property
    def n_classes(self) -> int:
        """Size of the label space."""
        return len(self.class_names)

    def offline(self) -> Scenario:
        """The offline-retraining baseline: one experience holding every train and test sample.

        Its domain joins the experiences' domains with ``+``; an offline scenario is returned
        as is.
        """
        if self.kind == "offline":
            return self
        exps = self.experiences
        with_ids = exps[0].train_ids is not None
        merged = Experience(
            index=0,
            train_x=_concat([exp.train_x for exp in exps]),
            train_y=torch.cat([exp.train_y for exp in exps]),
            test_x=_concat([exp.test_x for exp in exps]),
            test_y=torch.cat([exp.test_y for exp in exps]),
            classes=tuple(sorted(set().union(*(exp.classes for exp in exps)))),
            domain="+".join(dict.fromkeys(exp.domain for exp in exps)),
            train_ids=torch.cat([exp.train_ids for exp in exps]) if with_ids else None,
            test_ids=torch.cat([exp.test_ids for exp in exps]) if with_ids else None,
        )
        return Scenario(
            name=f"{self.name}/offline",
            kind="offline",
            experiences=(merged,),
            class_names=self.class_names,
            input_shape=self.input_shape,
            input_kind=self.input_kind,
            seed=self.seed,
        )
