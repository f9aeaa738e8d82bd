"""The Triton python-backend model that serves a modelci-e artifact (copied as ``model.py``).

Each version directory of the Triton model repository holds this file and ``model.pt`` (the
artifact of :meth:`model_factory.templates.Classifier.export`, loaded with
``weights_only=True``). The model answers the softmax probabilities of its classes, shape
``(batch, classes)``; the number of classes may differ between versions (new classes), which is
why the output's dims are ``[-1]`` in ``config.pbtxt``.

A text model (input data type ``TYPE_STRING``, template ``text-minilm``) decodes the UTF-8
strings of its BYTES input, embeds them with the offline all-MiniLM-L6-v2 encoder
(:class:`model_factory.templates.text.SentenceEncoder`, loaded once per version) and runs the
artifact's head on the embeddings.

Numeric tensors cross the stub by DLPack: the python-backend stub shipped with tritonserver 2.51
was built against NumPy 1.x and returns wrong data through ``as_numpy`` /
``Tensor(name, ndarray)`` under NumPy 2. Strings cannot cross by DLPack, so a text model reads
them with ``as_numpy``, which needs NumPy 1.x in the stub: the directory named by
``MODELCI_TRITON_STUB_SITE`` (NumPy 1.26, installed by ``./run``; see
:mod:`plugin.serving.triton_server`) goes first on ``sys.path`` before anything imports NumPy.
"""

import os
import sys

_STUB_SITE = os.environ.get("MODELCI_TRITON_STUB_SITE")
if _STUB_SITE and _STUB_SITE not in sys.path:
    sys.path.insert(0, _STUB_SITE)

import json  # noqa: E402 - after the stub's NumPy is first on the path
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402 - provided by the Triton stub
from torch.utils import dlpack  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        from model_factory.templates.artifact import load_for_serving, read_state

        torch.set_num_threads(1)
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.net, self.classes = load_for_serving(version_dir / "model.pt")
        self.encoder = None
        if config["input"][0]["data_type"] == "TYPE_STRING":
            import numpy

            if int(numpy.__version__.split(".")[0]) >= 2:
                raise pb_utils.TritonModelException(
                    f"a text model needs NumPy 1.x in the python-backend stub (found "
                    f"{numpy.__version__}): set MODELCI_TRITON_STUB_SITE to a directory holding "
                    f"numpy 1.26 (./run installs one in <venv>/triton-stub-site)")
            template = read_state(version_dir / "model.pt")["template"]
            if template != "text-minilm":
                raise pb_utils.TritonModelException(
                    f"a string input needs a text-minilm model (this artifact is {template})")
            from model_factory.templates.text import SentenceEncoder

            self.encoder = SentenceEncoder(cache_size=10_000)

    def _inputs(self, tensor):
        if self.encoder is None:
            return torch.from_dlpack(tensor.to_dlpack()).float()
        texts = [value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                 for value in tensor.as_numpy().reshape(-1)]
        return self.encoder.encode(texts)

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            inputs = self._inputs(tensor)
            with torch.inference_mode():
                probabilities = torch.softmax(self.net(inputs), dim=1).contiguous()
            output = pb_utils.Tensor.from_dlpack(self.output_name,
                                                 dlpack.to_dlpack(probabilities))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
