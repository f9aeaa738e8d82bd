"""The demo's client: a paced tritonclient traffic generator, and the CL server's REST API.

:class:`TrafficGenerator` sends one request at a time through the request-collecting proxy with
``tritonclient.http`` (binary tensors, an ``X-Request-Id`` header), at a fixed rate. It records
each request's true label in ``truth`` before sending it (the simulated annotator of
:mod:`plugin.demo.annotation` answers the request's task from there, whenever the annotation
loop selects it), and scores each answer against that label when it comes back, before any
label reaches the server (prequential accuracy).

Example (not a doctest: it needs a running proxy and CL server)::

    truth: dict[str, str] = {}
    traffic = TrafficGenerator(proxy_url, "mnist", "INPUT__0", "OUTPUT__0", truth, classes_of,
                               rate=15)
    traffic.run(phase, index=1)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests
import tritonclient.http as triton_http

from plugin.demo.data import Phase
from plugin.demo.inputs import infer_input


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


class TrafficGenerator:
    """Paced requests through the proxy with tritonclient; prequential scoring.

    Parameters:
        proxy_url: ``http://host:port`` of the request-collecting proxy.
        model: the model name clients use.
        input_name / output_name: the model's tensors (an ``FP32`` image or a ``BYTES`` text
            per request: :func:`plugin.demo.inputs.infer_input`).
        truth: request id -> true label, written before each request is sent.
        classes_of: the class names of a served version (output unit i is ``classes[i]``).
        rate: requests per second.
    """

    def __init__(self, proxy_url: str, model: str, input_name: str, output_name: str,
                 truth: dict[str, str], classes_of: Callable[[int], list[str]],
                 rate: float = 15.0):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s (got {rate})")
        self.client = triton_http.InferenceServerClient(
            proxy_url.removeprefix("http://"), connection_timeout=30.0, network_timeout=30.0)
        self.model = model
        self.input_name, self.output_name = input_name, output_name
        self.truth = truth
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

    def _request(self, phase: Phase, index: int, position: int) -> Answer | None:
        request_id = f"p{index}-{position}"
        tensor = infer_input(self.input_name, phase.x[position])
        wanted = triton_http.InferRequestedOutput(self.output_name, binary_data=True)
        label = phase.labels[position]
        self.truth[request_id] = label  # before the proxy records it: it may be selected then
        try:
            result = self.client.infer(self.model, [tensor], outputs=[wanted],
                                       headers={"X-Request-Id": request_id})
        except Exception as exc:  # noqa: BLE001 - tritonclient raises its own and socket errors
            self.errors.append(f"{request_id}: {exc}")
            return None
        version = int(result.get_response().get("model_version") or 0)
        scores = np.asarray(result.as_numpy(self.output_name)).reshape(-1)
        classes = self.classes_of(version)
        predicted = classes[int(scores.argmax())] if len(scores) == len(classes) else None
        answer = Answer(time.time(), index, position, version, predicted, label)
        self.answers.append(answer)
        return answer

    def close(self) -> None:
        self.client.close()
