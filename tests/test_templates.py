"""Model templates: build, fit with a CL strategy's hooks, predict, grow (NC), save/load, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_factory.strategies import CLStrategy
from model_factory.templates import Classifier, build_network, load_for_serving


@pytest.mark.parametrize(("template", "shape"), [
    ("mlp", (1, 8, 8)), ("tabular-mlp", (6,)), ("lenet5", (1, 28, 28)), ("lenet5", (1, 8, 8)),
    ("resnet18", (3, 32, 32))])
def test_every_network_maps_inputs_to_class_logits(template: str, shape: tuple[int, ...]) -> None:
    net = build_network(template, shape, 7).eval()
    assert net(torch.zeros(3, *shape)).shape == (3, 7)


def test_resnet18_has_about_11m_parameters() -> None:
    net = build_network("resnet18", (3, 32, 32), 10)
    assert 11_000_000 < sum(p.numel() for p in net.parameters()) < 11_300_000


def test_bad_template_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown model template 'vit'"):
        build_network("vit", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="lenet5 takes 28x28 or 8x8 inputs"):
        build_network("lenet5", (1, 32, 32), 10)
    with pytest.raises(ValueError, match="template 'mlp'.*width"):
        build_network("mlp", (4,), 2, width=3)


def separable(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


class Recorder(CLStrategy):
    name = "recorder-test"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_experience(self, model: torch.nn.Module) -> None:
        self.calls.append("before_experience")

    def penalty(self, model: torch.nn.Module, inputs: torch.Tensor,
                logits: torch.Tensor) -> torch.Tensor:
        self.calls.append("penalty")
        return logits.new_tensor(0.5)

    def before_step(self, model: torch.nn.Module) -> None:
        assert all(p.grad is not None for p in model.parameters())
        self.calls.append("before_step")

    def after_step(self, model: torch.nn.Module) -> None:
        self.calls.append("after_step")

    def after_experience(self, model: torch.nn.Module, loader: object) -> None:
        self.calls.append("after_experience")


def test_fit_calls_strategy_hooks_in_order_and_learns() -> None:
    x, y = separable()
    model = Classifier("mlp", (4,), ["neg", "pos"], params={"hidden": [16]}, seed=1,
                       learning_rate=0.01)
    strategy = Recorder()
    report = model.fit(x, y, strategy=strategy, epochs=2, batch_size=50)
    assert report["batches"] == 8
    assert report["mean_penalty"] == pytest.approx(0.5)
    assert strategy.calls[0] == "before_experience" and strategy.calls[-1] == "after_experience"
    assert strategy.calls[1:-1] == ["penalty", "before_step", "after_step"] * 8
    model.fit(x, y, epochs=20, batch_size=50)
    assert model.accuracy(x, y) > 0.95


def test_predict_gives_labels_and_confidences() -> None:
    model = Classifier("mlp", (4,), ["a", "b", "c"], seed=0)
    prediction = model.predict(torch.randn(5, 4))
    assert prediction.labels.dtype == torch.int64 and prediction.labels.shape == (5,)
    assert torch.allclose(prediction.confidences.sum(dim=1), torch.ones(5))
    assert torch.equal(prediction.confidences.argmax(dim=1), prediction.labels)


def test_grow_keeps_learned_weights_and_outputs() -> None:
    x, y = separable()
    model = Classifier("lenet5", (1, 8, 8), ["0", "1"], seed=0)
    images = torch.rand(40, 1, 8, 8)
    model.fit(images, torch.arange(40) % 2, epochs=1, batch_size=20)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    old_logits = model.net.eval()(images)
    model.grow(["2", "3"])
    after = model.net.state_dict()
    assert model.classes == ["0", "1", "2", "3"] and model.net.head.out_features == 4
    for key, value in before.items():
        if key.startswith("head."):
            assert torch.equal(after[key][:2], value)
        else:
            assert torch.equal(after[key], value)
    assert torch.allclose(model.net(images)[:, :2], old_logits)
    model.fit(images, torch.arange(40) % 4, epochs=1, batch_size=20)
    with pytest.raises(ValueError, match="already known"):
        model.grow(["1"])


def test_save_load_round_trip_with_optimizer_state(tmp_path: Path) -> None:
    x, y = separable()
    model = Classifier("mlp", (4,), ["a", "b"], params={"hidden": [8]}, seed=3)
    model.fit(x, y, epochs=1, batch_size=32)
    digest = model.save(tmp_path / "m.pt")
    assert len(digest) == 64
    loaded = Classifier.load(tmp_path / "m.pt")
    assert loaded.classes == ["a", "b"] and loaded.params == {"hidden": [8]}
    assert torch.equal(loaded.predict(x).confidences, model.predict(x).confidences)
    assert loaded._optimizer.state_dict()["state"].keys() == \
        model._optimizer.state_dict()["state"].keys()
    model.fit(x, y, epochs=1, batch_size=32)
    loaded.fit(x, y, epochs=1, batch_size=32)
    assert torch.allclose(loaded.predict(x).confidences, model.predict(x).confidences, atol=1e-6)


def test_export_is_loadable_for_serving_without_code(tmp_path: Path) -> None:
    model = Classifier("mlp", (4,), ["a", "b"], seed=0)
    model.export(tmp_path / "artifact.pt")
    net, classes = load_for_serving(tmp_path / "artifact.pt")
    assert classes == ["a", "b"] and not net.training
    x = torch.randn(3, 4)
    assert torch.allclose(net(x), model.net.eval()(x))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        Classifier.load(path)


def test_bad_training_input_is_named() -> None:
    model = Classifier("mlp", (4,), ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(3,\) per sample; the model takes \(4,\)"):
        model.fit(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        model.fit(torch.zeros(5, 4), torch.full((5,), 2))
    with pytest.raises(ValueError, match="empty experience"):
        model.fit(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite loss"):
        model.fit(torch.full((8, 4), float("nan")), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="unique"):
        Classifier("mlp", (4,), ["a", "a"])
