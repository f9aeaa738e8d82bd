"""Which CL scenario an update job runs: NI, NC, NIC or an offline retrain.

The scenario follows from the data the job will learn from (which classes its new labels hold)
and from how far the served data drifted. Pure logic, no I/O: the orchestrator passes the counts
it read from the store and records the returned choice with the job.

Example:
    >>> from cl_server.config.schema import ScenarioRules
    >>> switch = ScenarioSwitch(ScenarioRules())
    >>> switch.choose({"cat", "dog"}, {"cat": 60, "dog": 40}, drift_magnitude=0.1,
    ...               update_number=1).scenario
    'ni'
    >>> choice = switch.choose({"cat", "dog"}, {"cat": 10, "fox": 90}, drift_magnitude=None,
    ...                        update_number=2)
    >>> choice.scenario, choice.unseen_classes, choice.unseen_share
    ('nc', ('fox',), 0.9)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cl_server.config.schema import ScenarioRules

Scenario = Literal["ni", "nc", "nic", "retrain"]

NIC_DRIFT_FRACTION = 0.5
"""Drift on the known classes that makes NC data NIC, as a fraction of
``retrain_drift_magnitude``: at 0.5 (and the default 0.5 retrain magnitude) a magnitude of 0.25
or more."""


@dataclass(frozen=True)
class ScenarioChoice:
    """The scenario of one update job and why.

    Parameters:
        scenario: ``ni`` (new instances of known classes), ``nc`` (new classes), ``nic`` (both)
            or ``retrain`` (offline, from scratch on all data).
        reason: One line for people, with the numbers that decided.
        unseen_classes: Classes of the new labels the model does not know, sorted.
        unseen_share: Share of the new labeled samples in those classes, 0..1.

    Examples:
        >>> ScenarioChoice("ni", "no unseen classes", (), 0.0).as_dict()["unseen_classes"]
        []
    """

    scenario: Scenario
    reason: str
    unseen_classes: tuple[str, ...]
    unseen_share: float

    def as_dict(self) -> dict[str, Any]:
        """The choice as a JSON object (kept with the job)."""
        return {"scenario": self.scenario, "reason": self.reason,
                "unseen_classes": list(self.unseen_classes), "unseen_share": self.unseen_share}


class ScenarioSwitch:
    """Picks the CL scenario of an update job from its new labels and the measured drift.

    Rules, first match wins (``u`` is the share of new labeled samples in classes the model does
    not know, ``1 - u`` the share in known classes, ``m`` the drift magnitude):

    1. **retrain** when ``m >= retrain_drift_magnitude``: the data moved too far for an update.
    2. **retrain** when ``retrain_every > 0`` and ``update_number % retrain_every == 0``: a
       periodic calibration against accumulated update error.
    3. **nic** when ``u > nc_unseen_share`` and the known classes changed too: they still hold a
       meaningful part of the data, ``1 - u > nc_unseen_share`` (the same threshold, mirrored),
       and they drifted, ``m >= NIC_DRIFT_FRACTION * retrain_drift_magnitude``.
    4. **nc** when ``u > nc_unseen_share`` otherwise (known-class data is small or not drifted;
       what there is of it serves as rehearsal).
    5. ``default`` otherwise. Unseen classes at or below ``nc_unseen_share`` are reported in the
       choice but treated as noise (label errors, a class too rare to learn yet).

    Parameters:
        rules: The ``cl.scenario`` section of the service config.

    Examples:
        >>> from cl_server.config.schema import ScenarioRules
        >>> switch = ScenarioSwitch(ScenarioRules(nc_unseen_share=0.1, retrain_every=5))
        >>> switch.choose({"a", "b"}, {"a": 50, "c": 50}, drift_magnitude=0.3,
        ...               update_number=3).scenario
        'nic'
        >>> switch.choose({"a", "b"}, {"a": 50}, drift_magnitude=None, update_number=5).reason
        'update 5 is a calibration retrain (every 5 updates)'
    """

    def __init__(self, rules: ScenarioRules) -> None:
        self.rules = rules

    def choose(self, known_classes: Collection[str], new_labels: Mapping[str, int],
               drift_magnitude: float | None, update_number: int) -> ScenarioChoice:
        """The scenario of the next update job.

        Parameters:
            known_classes: Classes the served model predicts.
            new_labels: Class -> new labeled samples since the last job, samples (zero counts
                are ignored).
            drift_magnitude: The largest drift magnitude seen since the last job; ``None`` when
                no detector measured one.
            update_number: Number of this update, from 1 for the first.

        Raises:
            ValueError: no new labeled samples, a negative count, or ``update_number < 1``.
        """
        rules = self.rules
        if any(count < 0 for count in new_labels.values()):
            negative = sorted(c for c, n in new_labels.items() if n < 0)
            raise ValueError(f"negative new-label counts for classes: {', '.join(negative)}")
        total = sum(new_labels.values())
        if total == 0:
            raise ValueError("no new labeled samples: a scenario is chosen from the new labels "
                             "an update job learns from, and there are none")
        if update_number < 1:
            raise ValueError(f"update_number counts from 1 (got {update_number})")

        known = set(known_classes)
        unseen = tuple(sorted(c for c, n in new_labels.items() if n > 0 and c not in known))
        unseen_count = sum(new_labels[c] for c in unseen)
        unseen_share = unseen_count / total
        seen_share = (total - unseen_count) / total  # not 1 - unseen_share: exact at thresholds
        share_text = f"{unseen_share:.1%} of {total} new labels in unseen classes"

        def pick(scenario: Scenario, reason: str) -> ScenarioChoice:
            return ScenarioChoice(scenario, reason, unseen, unseen_share)

        if drift_magnitude is not None and drift_magnitude >= rules.retrain_drift_magnitude:
            return pick("retrain", f"drift magnitude {drift_magnitude:.3g} >= "
                        f"{rules.retrain_drift_magnitude:.3g}: offline retrain")
        if rules.retrain_every > 0 and update_number % rules.retrain_every == 0:
            return pick("retrain", f"update {update_number} is a calibration retrain "
                        f"(every {rules.retrain_every} updates)")
        if unseen_share > rules.nc_unseen_share:
            nic_magnitude = NIC_DRIFT_FRACTION * rules.retrain_drift_magnitude
            if (seen_share > rules.nc_unseen_share and drift_magnitude is not None
                    and drift_magnitude >= nic_magnitude):
                return pick("nic", f"{share_text} ({', '.join(unseen)}) and known classes "
                            f"drifted (magnitude {drift_magnitude:.3g} >= {nic_magnitude:.3g})")
            return pick("nc", f"{share_text} ({', '.join(unseen)}) > {rules.nc_unseen_share:.1%}")
        if unseen:
            return pick(rules.default, f"{share_text} ({', '.join(unseen)}) <= "
                        f"{rules.nc_unseen_share:.1%}, treated as noise: default "
                        f"'{rules.default}'")
        return pick(rules.default, f"no unseen classes in {total} new labels: default "
                    f"'{rules.default}'")
