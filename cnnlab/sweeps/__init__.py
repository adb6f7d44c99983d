"""Hyperparameter and architecture search: the Optuna-backed sweep, its trials' side, and the sweep report."""
