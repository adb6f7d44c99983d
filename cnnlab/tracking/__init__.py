"""Tracking: one Tracker fans training events out to sinks (terminal, TensorBoard, metrics.json)."""
