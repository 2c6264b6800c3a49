"""One entry per optimizer x configuration; drives the generic tests."""

import valley_core as vc

CONFIGS = {
    "alto_explore": ("alto", dict(lr=vc.inverse_sqrt(0.02), alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.0)),
    "alto_exploit": ("alto", dict(lr=vc.inverse_sqrt(0.02), alpha=0.5, betas=(0.01, 0.9, 0.999), weight_decay=0.0)),
    "alto_vanilla": (
        "alto_vanilla",
        dict(lr=vc.inverse_sqrt(0.02), alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.0),
    ),
    "lamb": ("lamb", dict(lr=vc.inverse_sqrt(0.02), betas=(0.9, 0.999), weight_decay=0.0)),
    "eadam": ("eadam", dict(lr=0.01, alpha=0.5, betas=(0.01, 0.9, 0.999))),
    "eadam_explore": ("eadam", dict(lr=0.005, alpha=-0.5, betas=(0.5, 0.9, 0.999))),
    "adam": ("adam", dict(lr=0.01)),
    "eadamw": ("eadamw", dict(lr=0.005, alpha=-0.5, betas=(0.5, 0.9, 0.999), weight_decay=0.0)),
    "adamw": ("adamw", dict(lr=0.01, weight_decay=0.0)),
    "esgd": ("esgd", dict(lr=1e-3, alpha=0.5, betas=(0.01, 0.9))),
    "esgd_explore": ("esgd", dict(lr=1e-3, alpha=-0.3, betas=(0.5, 0.5))),
    "sgd": ("sgd", dict(lr=1e-3, momentum=0.9)),
}


def make(config_id):
    name, kwargs = CONFIGS[config_id]
    return vc.OPTIMIZERS[name](**kwargs)
