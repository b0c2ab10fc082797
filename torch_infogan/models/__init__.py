"""Reference GAN architectures, built from a small config dict so checkpoints can rebuild them."""

from __future__ import annotations

from torch import nn

from torch_infogan.errors import InfoGANError
from torch_infogan.models.dcgan import DCGAN_TAP, Discriminator, Generator, build_dcgan
from torch_infogan.models.shapes import SHAPES_TAP, ShapesDiscriminator, ShapesGenerator, build_shapes

BUILDERS = {"dcgan": build_dcgan, "shapes": build_shapes}
TAP_LAYERS = {"dcgan": DCGAN_TAP, "shapes": SHAPES_TAP}


def build_models(config: dict) -> tuple[nn.Module, nn.Module]:
    """Build ``(generator, discriminator)`` from ``{"builder": name, **kwargs}``."""
    config = dict(config)
    name = config.pop("builder", "dcgan")
    if name not in BUILDERS:
        raise InfoGANError(f"unknown model builder {name!r}; known: {', '.join(sorted(BUILDERS))}")
    try:
        return BUILDERS[name](**config)
    except TypeError as exc:
        raise InfoGANError(f"bad arguments for model builder {name!r}: {exc}") from exc


__all__ = ["BUILDERS", "TAP_LAYERS", "DCGAN_TAP", "SHAPES_TAP", "Discriminator", "Generator", "ShapesDiscriminator",
           "ShapesGenerator", "build_dcgan", "build_models", "build_shapes"]
