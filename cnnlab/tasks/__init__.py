"""Hydra entry points, one module per CLI subcommand; each composes, then calls into the package."""
