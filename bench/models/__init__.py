"""The models wing: models the suite did not train, from files, torchvision, timm, RobustBench or a
user's function, wrapped to take [0, 1] images and identified by their weights."""

from .given import GivenModel, ModelConfig, Preprocessed, Preprocessing, check_fits, weights_digest
from .sources import SOURCES, Source, SourceOptions, parse_spec, plain_name

__all__ = ["SOURCES", "GivenModel", "ModelConfig", "Preprocessed", "Preprocessing", "Source",
           "SourceOptions", "check_fits", "parse_spec", "plain_name", "weights_digest"]
