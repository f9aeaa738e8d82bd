"""A classifier built from a template: fit (PyTorch Lightning), predict, grow, save, export.

:class:`Classifier` is what researchers build a CL model with and what the CL envelope job
trains. ``fit`` runs a Lightning ``Trainer`` on one experience with a CL strategy's hooks wired
into the loop (penalty in ``training_step``, ``before_step`` before the optimizer step,
``after_step`` after it); the optimizer lives across fits, so a warm (stateful) update keeps its
optimizer state too. ``grow`` adds classes keeping every learned weight (NC). ``save``/``load``
use a dict of tensors and plain values, loaded with ``torch.load(weights_only=True)``.

Example:
    >>> import torch
    >>> model = Classifier("mlp", (4,), ["a", "b"], params={"hidden": [8]}, seed=0,
    ...                    learning_rate=0.05)
    >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
    >>> report = model.fit(x, y, epochs=20, batch_size=16)
    >>> model.accuracy(x, y) > 0.9
    True
    >>> model.grow(["c"]); model.classes, model.predict(x[:2]).confidences.shape
    (['a', 'b', 'c'], torch.Size([2, 3]))
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from model_factory.strategies import CLStrategy
from model_factory.templates.artifact import FORMAT, read_state
from model_factory.templates.networks import Network, build_network

_OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}

for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def prebatched(batches: Iterable[tuple[Tensor, Tensor]]) -> DataLoader:
    """A loader yielding ready-made ``(inputs, targets)`` batches as they are (e.g. rehearsal
    or proactive batches) for :meth:`Classifier.fit`."""
    return DataLoader(list(batches), batch_size=None, shuffle=False)


@dataclass(frozen=True)
class Prediction:
    """``labels``: int64 [N] class indices; ``confidences``: float32 [N, C] softmax."""

    labels: Tensor
    confidences: Tensor


class _Lit(pl.LightningModule):
    """The Lightning view of a :class:`Classifier` during one ``fit``."""

    def __init__(self, net: nn.Module, strategy: CLStrategy, optimizer: torch.optim.Optimizer,
                 between_steps: Callable[[], None] | None = None):
        super().__init__()
        self.net = net
        self.strategy = strategy
        self._optimizer = optimizer
        self._between_steps = between_steps
        self.batches = 0
        self.loss_sum = 0.0
        self.penalty_sum = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x)
        penalty = self.strategy.penalty(self.net, x, logits)
        loss = F.cross_entropy(logits, y) + penalty
        if not torch.isfinite(loss):
            raise ValueError(f"non-finite loss at epoch {self.current_epoch}, batch {batch_idx}: "
                             f"{loss.item()} (penalty {float(penalty)}); check the inputs and "
                             "the learning rate")
        self.batches += 1
        self.loss_sum += float(loss.detach())
        self.penalty_sum += float(penalty.detach())
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.strategy.before_step(self.net)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.strategy.after_step(self.net)
        if self._between_steps is not None:
            self._between_steps()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._optimizer


class Classifier:
    """A template network with its class names, trained one experience at a time.

    Parameters:
        template: ``mlp``, ``tabular-mlp``, ``lenet5``, ``resnet18`` or ``text-minilm`` (a head
            over 384-d sentence embeddings; :class:`~model_factory.templates.text.TextClassifier`
            adds the frozen encoder).
        input_shape: one input's shape (no batch axis), e.g. ``(1, 28, 28)``.
        classes: class names; output unit i is ``classes[i]``.
        params: template parameters (e.g. ``{"hidden": [400, 400]}`` for ``mlp``).
        seed: seeds weight initialisation and batch order.
        optimizer: ``adam`` or ``sgd``; learning_rate: its step size.
    """

    def __init__(self, template: str, input_shape: Sequence[int], classes: Sequence[str], *,
                 params: dict[str, Any] | None = None, seed: int = 0, optimizer: str = "adam",
                 learning_rate: float = 1e-3):
        if len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"classes must be non-empty and unique (got {list(classes)})")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer '{optimizer}' (expected one of: "
                             f"{', '.join(_OPTIMIZERS)})")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0 (got {learning_rate})")
        self.template = template
        self.input_shape = tuple(int(d) for d in input_shape)
        self.classes = list(classes)
        self.params = dict(params or {})
        self.seed = seed
        self.optimizer_name = optimizer
        self.learning_rate = learning_rate
        torch.manual_seed(seed)
        self.net: Network = build_network(template, self.input_shape, len(self.classes),
                                          **self.params)
        self._optimizer = self._new_optimizer()
        self._fits = 0

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return _OPTIMIZERS[self.optimizer_name](self.net.parameters(), lr=self.learning_rate)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def size_bytes(self) -> int:
        """Bytes of the weights as stored (parameters and buffers)."""
        return sum(t.numel() * t.element_size() for t in self.net.state_dict().values())

    def _check_inputs(self, x: Tensor, y: Tensor | None = None) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs have shape {tuple(x.shape[1:])} per sample; the model "
                             f"takes {self.input_shape}")
        if y is not None:
            if len(y) != len(x):
                raise ValueError(f"{len(x)} inputs but {len(y)} targets")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"targets must be class indices in [0, {self.num_classes}) "
                                 f"(got {int(y.min())}..{int(y.max())}); grow() the model for "
                                 "new classes")

    def fit(self, x: Tensor, y: Tensor, *, strategy: CLStrategy | None = None, epochs: int = 1,
            batch_size: int = 64, loader: DataLoader | None = None,
            optimizer: torch.optim.Optimizer | None = None,
            between_steps: Callable[[], None] | None = None) -> dict[str, float]:
        """Train on one experience; returns wall time (s), batches, mean loss and penalty.

        ``loader`` replaces the default shuffled loader over ``(x, y)`` (e.g. to mix in rehearsal
        samples); ``strategy`` defaults to naive fine-tuning. ``optimizer`` (over ``self.net``'s
        parameters, e.g. a :class:`~model_factory.sparse.SparseResidualSGD` kept across updates)
        trains this fit instead of the model's own optimizer, whose state is left as it is.
        ``between_steps`` is called after every optimizer step (a scheduling governor paces or
        pauses the job there; it may raise to stop the fit).
        """
        self._check_inputs(x, y)
        if len(x) == 0:
            raise ValueError("cannot fit on an empty experience")
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got {epochs}, {batch_size})")
        strategy = strategy or CLStrategy()
        generator = torch.Generator().manual_seed(self.seed + self._fits)
        if loader is None:
            loader = DataLoader(TensorDataset(x, y.long()), batch_size=batch_size, shuffle=True,
                                generator=generator)
        lit = _Lit(self.net, strategy, self._optimizer if optimizer is None else optimizer,
                   between_steps)
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_checkpointing=False,
                             enable_model_summary=False, num_sanity_val_steps=0)
        start = time.perf_counter()
        self.net.train()  # predict() leaves it in eval mode; Lightning does not switch it back
        strategy.before_experience(self.net)
        trainer.fit(lit, loader)
        self.net.eval()
        strategy.after_experience(self.net, loader)
        self._fits += 1
        return {"wall_s": time.perf_counter() - start, "batches": lit.batches,
                "mean_loss": lit.loss_sum / max(lit.batches, 1),
                "mean_penalty": lit.penalty_sum / max(lit.batches, 1)}

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 512) -> Prediction:
        """Class indices and softmax confidences for ``x`` [N, *input_shape]."""
        self._check_inputs(x)
        self.net.eval()
        logits = torch.cat([self.net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
                           ) if len(x) else torch.zeros(0, self.num_classes)
        confidences = torch.softmax(logits, dim=1)
        return Prediction(labels=confidences.argmax(dim=1), confidences=confidences)

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Share of ``x`` classified as ``y`` (NaN for no samples)."""
        self._check_inputs(x)
        if len(x) == 0:
            return math.nan
        return float((self.predict(x).labels == y).float().mean())

    def grow(self, new_classes: Sequence[str]) -> None:
        """Add output units for ``new_classes``, keeping every learned weight (NC updates).

        The optimizer is rebuilt (its state belongs to the old head's shape).
        """
        clash = [c for c in new_classes if c in self.classes]
        if clash or len(set(new_classes)) != len(new_classes):
            raise ValueError(f"new classes must be new and unique (already known or repeated: "
                             f"{clash or list(new_classes)})")
        if not new_classes:
            return
        old = self.net.head
        head = nn.Linear(old.in_features, old.out_features + len(new_classes))
        with torch.no_grad():
            head.weight[: old.out_features] = old.weight
            head.bias[: old.out_features] = old.bias
        self.net.head = head
        self.classes += list(new_classes)
        self._optimizer = self._new_optimizer()

    # -- persistence -----------------------------------------------------------------------
    def state(self, include_optimizer: bool = True) -> dict[str, Any]:
        """Everything needed to rebuild the model: plain values and tensors only."""
        out: dict[str, Any] = {
            "format": FORMAT, "template": self.template, "input_shape": list(self.input_shape),
            "classes": list(self.classes), "params": self.params, "seed": self.seed,
            "optimizer": self.optimizer_name, "learning_rate": self.learning_rate,
            "fits": self._fits, "weights": self.net.state_dict()}
        if include_optimizer:
            out["optimizer_state"] = self._optimizer.state_dict()
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Classifier:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a modelci-e classifier (format {state.get('format')!r}, "
                             f"expected {FORMAT!r})")
        model = cls(state["template"], state["input_shape"], state["classes"],
                    params=state["params"], seed=state["seed"], optimizer=state["optimizer"],
                    learning_rate=state["learning_rate"])
        model.net.load_state_dict(state["weights"])
        if "optimizer_state" in state:
            model._optimizer.load_state_dict(state["optimizer_state"])
        model._fits = int(state["fits"])
        return model

    def save(self, path: str | Path, include_optimizer: bool = True) -> str:
        """Write the model to ``path``; returns the file's sha256."""
        buffer = io.BytesIO()
        torch.save(self.state(include_optimizer), buffer)
        data = buffer.getvalue()
        Path(path).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Read a saved model (``weights_only=True``: a file cannot run code when loaded)."""
        return cls.from_state(read_state(path))

    def export(self, path: str | Path) -> str:
        """Write the serving artifact (weights without optimizer state); returns its sha256.

        Serving loads it with :func:`load_for_serving`.
        """
        return self.save(path, include_optimizer=False)
