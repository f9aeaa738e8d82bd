"""Model templates: networks ending in a growable head, wrapped in a Lightning-trained
:class:`Classifier`."""

from model_factory.templates.classifier import (
    Classifier,
    Prediction,
    load_for_serving,
    prebatched,
)
from model_factory.templates.networks import NETWORKS, Network, build_network
from model_factory.templates.text import SentenceEncoder, TextClassifier

__all__ = ["NETWORKS", "Classifier", "Network", "Prediction", "SentenceEncoder",
           "TextClassifier", "build_network", "load_for_serving", "prebatched"]
