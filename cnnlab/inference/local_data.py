"""Where a checkpoint's data lives on this machine: its data set's settings, with this machine's locations."""

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from cnnlab.training.resume import flatten

LOCATION_KEYS = ("root", "cache_dir", "download", "url", "md5")


def with_local_data_settings(saved: DictConfig) -> DictConfig:
    """This machine's config of the checkpoint's dataset, with the checkpoint's values for its other settings.

    Where data lives and comes from (root, cache_dir, download, url, md5) and what loads it (_target_)
    are this machine's: a checkpoint records the training machine's folders, and taken from a shared
    file they would let it choose where to download and unpack. The split and augmentation settings
    are the checkpoint's. An image folder keeps its recorded root: it has no default, and reading a
    folder as images writes nothing there.
    """
    local = OmegaConf.create(
        OmegaConf.to_container(compose(config_name="train", overrides=[f"dataset={saved.name}"]).dataset)
    )
    recorded = flatten(OmegaConf.to_container(saved))
    for key, value in flatten(OmegaConf.to_container(local)).items():
        name = key.rsplit(".", 1)[-1]
        keep_local = name == "_target_" or (name in LOCATION_KEYS and value != "???")
        if not keep_local and key in recorded:
            OmegaConf.update(local, key, recorded[key])
    return local
