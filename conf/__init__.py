"""cnnlab's Hydra configs, shipped inside the package as cnnlab.conf (one folder per config group)."""
