"""torch-infogan: InfoGAN's interpretable latent codes as a plug-in for any PyTorch GAN."""

from torch_infogan.codes import (
    Bernoulli,
    Categorical,
    Code,
    Gaussian,
    Uniform,
    format_codes,
    get_code,
    list_codes,
    parse_codes,
    register_code,
    split_params,
)
from torch_infogan.contrastive import ContrastiveRegularizer
from torch_infogan.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, save_weights_only
from torch_infogan.errors import InfoGANError
from torch_infogan.qhead import QHead
from torch_infogan.regularizer import InfoRegularizer

__version__ = "0.1.0"

__all__ = [
    "Bernoulli",
    "Categorical",
    "Checkpoint",
    "Code",
    "ContrastiveRegularizer",
    "Gaussian",
    "InfoGANError",
    "InfoRegularizer",
    "QHead",
    "Uniform",
    "__version__",
    "format_codes",
    "get_code",
    "list_codes",
    "load_checkpoint",
    "parse_codes",
    "register_code",
    "save_checkpoint",
    "save_weights_only",
    "split_params",
]
