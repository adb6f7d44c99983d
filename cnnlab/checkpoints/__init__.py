"""Checkpoints: crash-safe writes and the state a run needs to continue."""
