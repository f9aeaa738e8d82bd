"""The Triton python-backend model that serves a modelci-e artifact (copied as ``model.py``).

Each version directory of the Triton model repository holds this file and ``model.pt`` (the
artifact of :meth:`model_factory.templates.Classifier.export`, loaded with
``weights_only=True``). The model answers the softmax probabilities of its classes, shape
``(batch, classes)``; the number of classes may differ between versions (new classes), which is
why the output's dims are ``[-1]`` in ``config.pbtxt``.

Tensors cross the stub by DLPack, not NumPy: the python-backend stub shipped with tritonserver
2.51 was built against NumPy 1.x and returns wrong data through ``as_numpy`` /
``Tensor(name, ndarray)`` under NumPy 2.
"""

import json
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils  # provided by the Triton python backend stub
from torch.utils import dlpack


class TritonPythonModel:
    def initialize(self, args):
        from model_factory.templates.artifact import load_for_serving

        torch.set_num_threads(1)
        config = json.loads(args["model_config"])
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.net, self.classes = load_for_serving(version_dir / "model.pt")

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            inputs = torch.from_dlpack(tensor.to_dlpack()).float()
            with torch.inference_mode():
                probabilities = torch.softmax(self.net(inputs), dim=1).contiguous()
            output = pb_utils.Tensor.from_dlpack(self.output_name,
                                                 dlpack.to_dlpack(probabilities))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
