"""Server and client models. Every representation is a unit vector in the federation's d-space."""

from creamfl.models.bert_text import BertTextConfig, BertTextEncoder
from creamfl.models.client_base import ClientModel
from creamfl.models.common import MODALITIES, Modality, other_modality
from creamfl.models.dual_encoder import DualEncoder, DualEncoderConfig
from creamfl.models.gru_text import GRUTextConfig, GRUTextEncoder
from creamfl.models.image_classifier import ImageClassifier, ImageClassifierConfig
from creamfl.models.registry import CLIENT_MODELS, build_client_model, client_model_modalities
from creamfl.models.resnet import ResNetConfig, ResNetEncoder
from creamfl.models.server import ServerConfig, ServerModel
from creamfl.models.text_classifier import TextClassifier, TextClassifierConfig

__all__ = [
    "CLIENT_MODELS",
    "MODALITIES",
    "BertTextConfig",
    "BertTextEncoder",
    "ClientModel",
    "DualEncoder",
    "DualEncoderConfig",
    "GRUTextConfig",
    "GRUTextEncoder",
    "ImageClassifier",
    "ImageClassifierConfig",
    "Modality",
    "ResNetConfig",
    "ResNetEncoder",
    "ServerConfig",
    "ServerModel",
    "TextClassifier",
    "TextClassifierConfig",
    "build_client_model",
    "client_model_modalities",
    "other_modality",
]
