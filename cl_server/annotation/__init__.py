"""The annotation loop: which served samples to label (:mod:`.selection`) within a labeling
budget (:mod:`.budget`)."""

from cl_server.annotation.budget import LabelingBudget
from cl_server.annotation.selection import SELECTORS, Candidate, make_selector

__all__ = ["SELECTORS", "Candidate", "LabelingBudget", "make_selector"]
