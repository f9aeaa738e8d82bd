"""The demo's clients: a paced tritonclient traffic generator and a simulated annotator.

:class:`TrafficGenerator` sends one request at a time through the request-collecting proxy with
``tritonclient.http`` (binary tensors, an ``X-Request-Id`` header), at a fixed rate. Each answer
is scored against the true label when it comes back, before any label reaches the server
(prequential accuracy), and handed to the annotator.

:class:`SimulatedAnnotator` stands in for a person labeling the served requests: each label goes
to the CL server's labels endpoint (``POST /api/services/{name}/labels``, the path Label Studio's
bridge and any feedback source use) ``delay_s`` after its answer, in batches, wrong with
probability ``error_rate``. A label the server does not know yet (the proxy records requests
asynchronously) is sent again a little later.

Example (not a doctest: it needs a running proxy and CL server)::

    annotator = SimulatedAnnotator(api, "mnist-demo", delay_s=2.0)
    traffic = TrafficGenerator(proxy_url, "mnist", model_inputs, annotator, classes_of, rate=15)
    traffic.run(phase, index=1)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests
import tritonclient.http as triton_http

from plugin.demo.data import Phase

LABEL_BATCH = 200
RETRY_AFTER_S = 0.25
MAX_TRIES = 40


@dataclass(frozen=True)
class Answer:
    """One served request, scored when its answer came back."""

    t: float            # time.time() of the answer
    phase: int          # index of the phase it belongs to
    position: int       # its position in the phase's inputs
    version: int        # the model version that answered (0: no answer)
    predicted: str | None
    label: str

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


class Api:
    """The CL server's REST API with one bearer token (raises on an error status)."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    def get(self, path: str, **params: object) -> object:
        response = self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        self._check(response)
        return response.json()

    def post(self, path: str, body: object) -> object:
        response = self.session.post(f"{self.url}{path}", json=body, timeout=self.timeout_s)
        self._check(response)
        return response.json()

    def patch(self, path: str, body: object) -> object:
        response = self.session.patch(f"{self.url}{path}", json=body, timeout=self.timeout_s)
        self._check(response)
        return response.json()

    @staticmethod
    def _check(response: requests.Response) -> None:
        if response.status_code >= 400:
            raise RuntimeError(f"{response.request.method} {response.url}: "
                               f"{response.status_code} {response.text[:500]}")


class SimulatedAnnotator:
    """Labels served requests through the CL server's labels endpoint after a delay.

    Parameters:
        api: the CL server's API (a token with the researcher role or above).
        service: the service's name.
        delay_s: seconds from an answer to its label.
        error_rate: share of labels replaced by another class (``classes`` required then).
    """

    def __init__(self, api: Api, service: str, delay_s: float = 2.0, error_rate: float = 0.0,
                 classes: list[str] | None = None, seed: int = 0):
        if not 0 <= error_rate < 1 or (error_rate and not classes):
            raise ValueError("error_rate must be in [0, 1), with the classes to pick from")
        self.api = api
        self.path = f"/api/services/{service}/labels"
        self.delay_s = delay_s
        self.error_rate = error_rate
        self.classes = classes or []
        self.rng = np.random.default_rng(seed)
        self.accepted: list[tuple[float, str, str]] = []   # (time.time(), request id, label)
        self.unmatched = 0
        self._pending: deque[tuple[float, str, str, int]] = deque()
        self._lock = threading.Lock()

    def served(self, request_id: str, label: str, at: float) -> None:
        """``request_id`` was answered at monotonic time ``at``; its true class is ``label``."""
        if self.error_rate and self.rng.random() < self.error_rate:
            label = str(self.rng.choice([c for c in self.classes if c != label]))
        with self._lock:
            self._pending.append((at + self.delay_s, request_id, label, 0))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pump(self, now: float | None = None, force: bool = False) -> int:
        """Send every label that is due (all of them with ``force``); returns how many the
        server accepted."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = []
            while self._pending and (force or self._pending[0][0] <= now) \
                    and len(due) < LABEL_BATCH:
                due.append(self._pending.popleft())
        if not due:
            return 0
        result = self.api.post(self.path, {"labels": [{"request_id": r, "label": lab}
                                                      for _, r, lab, _ in due]})
        assert isinstance(result, dict)
        unknown = set(result.get("unknown_ids", []))
        stamp = time.time()
        retry = []
        for _, request_id, label, tries in due:
            if request_id not in unknown:
                self.accepted.append((stamp, request_id, label))
            elif tries < MAX_TRIES:
                retry.append((now + RETRY_AFTER_S, request_id, label, tries + 1))
            else:
                self.unmatched += 1
        with self._lock:
            self._pending.extend(retry)
        return int(result.get("labeled", 0))

    def drain(self, timeout_s: float = 15.0) -> None:
        """Send what is still pending, waiting out the delays, for at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.1)


class TrafficGenerator:
    """Paced requests through the proxy with tritonclient; prequential scoring; labels after.

    Parameters:
        proxy_url: ``http://host:port`` of the request-collecting proxy.
        model: the model name clients use.
        input_name / output_name / datatype: the model's tensors (``FP32`` images here).
        annotator: receives every answered request.
        classes_of: the class names of a served version (output unit i is ``classes[i]``).
        rate: requests per second.
    """

    def __init__(self, proxy_url: str, model: str, input_name: str, output_name: str,
                 annotator: SimulatedAnnotator, classes_of: Callable[[int], list[str]],
                 rate: float = 15.0, datatype: str = "FP32"):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s (got {rate})")
        self.client = triton_http.InferenceServerClient(
            proxy_url.removeprefix("http://"), connection_timeout=30.0, network_timeout=30.0)
        self.model = model
        self.input_name, self.output_name, self.datatype = input_name, output_name, datatype
        self.annotator = annotator
        self.classes_of = classes_of
        self.rate = rate
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self, phase: Phase, index: int,
            on_answer: Callable[[Answer], None] | None = None) -> None:
        """Send ``phase``'s inputs in order at the rate (returns early once :attr:`stop`)."""
        period = 1.0 / self.rate
        start = time.monotonic()
        for position in range(len(phase)):
            if self.stop.is_set():
                return
            delay = start + position * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            answer = self._request(phase, index, position)
            if on_answer is not None and answer is not None:
                on_answer(answer)
            self.annotator.pump()

    def _request(self, phase: Phase, index: int, position: int) -> Answer | None:
        request_id = f"p{index}-{position}"
        tensor = triton_http.InferInput(self.input_name, [1, *phase.x.shape[1:]], self.datatype)
        tensor.set_data_from_numpy(phase.x[position:position + 1], binary_data=True)
        wanted = triton_http.InferRequestedOutput(self.output_name, binary_data=True)
        label = phase.labels[position]
        try:
            result = self.client.infer(self.model, [tensor], outputs=[wanted],
                                       headers={"X-Request-Id": request_id})
        except Exception as exc:  # noqa: BLE001 - tritonclient raises its own and socket errors
            self.errors.append(f"{request_id}: {exc}")
            return None
        at = time.monotonic()
        version = int(result.get_response().get("model_version") or 0)
        scores = np.asarray(result.as_numpy(self.output_name)).reshape(-1)
        classes = self.classes_of(version)
        predicted = classes[int(scores.argmax())] if len(scores) == len(classes) else None
        answer = Answer(time.time(), index, position, version, predicted, label)
        self.answers.append(answer)
        self.annotator.served(request_id, label, at)
        return answer

    def close(self) -> None:
        self.client.close()
