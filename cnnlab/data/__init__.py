"""Data: decode a data set once into uint8 tensors, split it, and serve augmented batches on the device."""
