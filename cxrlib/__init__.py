"""CXR Study helper package: data, folds, training, evaluation and Grad-CAM for the notebooks."""

__version__ = "0.1.0"
