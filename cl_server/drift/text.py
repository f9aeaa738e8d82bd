"""Text inputs as numbers that covariate-drift detectors can compare: one row of descriptors per
text.

Input drift of a text service is watched on cheap surface statistics of what is served, the
descriptors text-monitoring tools use (length, vocabulary, punctuation): computing them costs
microseconds per text, and needs no model in the CL server. A change of source (short
one-sentence snippets to long reviews, another language, markup) moves them at once. A shift of
topic at the same surface would not: that shows on the predictions and the errors, which the
other detectors watch.

The columns, in order (:data:`DESCRIPTORS`): ``log(1 + characters)``, ``log(1 + words)``, mean
word length (characters), share of non-letter characters (digits, punctuation, symbols; spaces
excluded), share of upper-case letters among the letters.

Example:
    >>> rows = text_descriptors(["A fine film.", "<br />It was DULL, 2 hours of it"])
    >>> rows.shape, rows.round(2).tolist()[0]
    ((2, 5), [2.56, 1.39, 3.33, 0.1, 0.11])
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

DESCRIPTORS = ("log_characters", "log_words", "mean_word_length", "non_letter_share",
               "upper_share")


def _describe(text: str) -> list[float]:
    words = text.split()
    letters = sum(c.isalpha() for c in text)
    visible = sum(not c.isspace() for c in text)
    upper = sum(c.isupper() for c in text)
    return [math.log1p(len(text)), math.log1p(len(words)),
            sum(map(len, words)) / len(words) if words else 0.0,
            (visible - letters) / visible if visible else 0.0,
            upper / letters if letters else 0.0]


def text_descriptors(texts: Iterable[str | bytes]) -> np.ndarray:
    """``(n, 5)`` float64 descriptors of ``texts`` (bytes are decoded as UTF-8)."""
    rows = [_describe(t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t))
            for t in texts]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(DESCRIPTORS))
