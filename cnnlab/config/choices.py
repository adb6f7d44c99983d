"""The named choices of the augmentation and test-time augmentation keys, in one place and without torch.

Config validation checks them before torch is imported (a typo fails in well under a second); the code
that implements each choice reads the same names, so the two cannot drift apart.
"""

FLIP_MODES = ("random", "alternate")  # dataset.augment.flip_mode
PAD_MODES = ("zeros", "reflect")  # dataset.augment.pad_mode
TTA_LEVELS = ("none", "flip", "flip_translate")  # trainer.tta and `cnnlab eval tta=`
TTA_ALIASES = {False: "none", True: "flip"}  # what tta was before it had levels: old configs and saved runs


def tta_level(value: bool | str) -> str:
    """The TTA level a config value names; true and false, from before there were levels, mean flip and none."""
    level = TTA_ALIASES[value] if isinstance(value, bool) else value
    if level not in TTA_LEVELS:
        raise ValueError(f"unknown TTA level {value!r}: use one of {', '.join(TTA_LEVELS)}")
    return level
