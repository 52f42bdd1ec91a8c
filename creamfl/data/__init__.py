"""Datasets: the built-in scenes-with-captions generator, real-format loaders, partitioning."""

from creamfl.data.types import ImageFiles, ImageSource, ImageTextPairs, LabelledImages, LabelledTexts

__all__ = ["ImageFiles", "ImageSource", "ImageTextPairs", "LabelledImages", "LabelledTexts"]
