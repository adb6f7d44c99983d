"""cnnlab: train and search efficient convolutional networks from Hydra configs."""

__version__ = "0.1.0"
