"""ContrastiveRegularizer: InfoGAN-CR's contrastive term, a pair classifier that must tell which code two images share."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from torch_infogan.errors import InfoGANError
from torch_infogan.heads import add_head, remove_head
from torch_infogan.regularizer import InfoRegularizer


class PairClassifier(nn.Module):
    """Two images stacked on channels -> one logit per code: ``convs 4x4/2 (32, 32, 64, 64 channels, halving
    while the side is at least 8) lReLU -> FC 128 lReLU -> FC codes``, spectrally normalized."""

    def __init__(self, image_shape, num_codes: int, hidden: int = 128, negative_slope: float = 0.2):
        super().__init__()
        channels, height, width = (int(s) for s in image_shape)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        w_in, side = 2 * channels, min(height, width)
        for i, w in enumerate((32, 32, 64, 64)):
            if side < 8:
                break
            layers[f"conv{i}"] = spectral_norm(nn.Conv2d(w_in, w, 4, 2, 1))
            layers[f"act{i}"] = nn.LeakyReLU(negative_slope, inplace=True)
            w_in, side, height, width = w, side // 2, height // 2, width // 2
        layers["flatten"] = nn.Flatten()
        layers["fc"] = spectral_norm(nn.Linear(w_in * height * width, hidden))
        layers["act_fc"] = nn.LeakyReLU(negative_slope, inplace=True)
        layers["out"] = nn.Linear(hidden, num_codes)
        self.net = nn.Sequential(layers)

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([images_a, images_b], dim=1))


class ContrastiveRegularizer:
    """InfoGAN-CR's contrastive regularizer (Lin et al., ICML 2020) for the codes of an ``InfoRegularizer``.

    Pairs of latents share the noise and one code, chosen at random per pair; the other codes are drawn
    independently. A pair classifier sees the two generated images stacked on channels and learns which code
    they share; from step ``start`` on the generator is trained to make that easy too, which pushes each code
    towards a factor of its own. Attach it to the discriminator like ``InfoRegularizer`` (the classifier
    becomes the submodule ``discriminator.<head_name>``, so D's optimizer, ``state_dict()`` and ``.to()``
    cover it), then add its loss to both players::

        cr = ContrastiveRegularizer(info, weight=2.0, start=5000).attach(netD, image_shape=(1, 64, 64))
        latent_a, latent_b, shared = cr.pairs(batch_size)
        with torch.set_grad_enabled(cr.active(step)):                 # G's side needs gradients only when on
            images_a, images_b = netG(latent_a), netG(latent_b)
        loss_d = loss_d + cr.loss(images_a.detach(), images_b.detach(), shared)   # the classifier learns
        if cr.active(step):
            loss_g = loss_g + cr.loss(images_a, images_b, shared)                 # G learns

    The classifier learns from the first step, so it is ready when G's term starts and, under
    DistributedDataParallel, its parameters get a gradient in every backward (InfoGAN-CR's code also trains
    it from the first step, but re-initializes it when G's term starts; here it keeps what it learnt).
    ``weight`` scales the cross-entropy for both players (with Adam, only G feels it). ``gap``: the
    uniform codes that are *not* shared are drawn at least ``gap`` apart (in the code's units), so the pair
    differs clearly in everything but the shared code (InfoGAN-CR's contrastive gap; 0, their dSprites
    setting, draws them independently; codes without a bounded range are always drawn independently).
    """

    def __init__(self, info: InfoRegularizer, weight: float = 1.0, start: int = 0, gap: float = 0.0,
                 hidden: int = 128, head_name: str = "info_cr"):
        if len(info.codes) < 2:
            raise InfoGANError("the contrastive regularizer needs at least two codes (it asks which one a pair shares)")
        if not weight >= 0:
            raise InfoGANError(f"contrastive weight must be >= 0, got {weight}")
        if start < 0:
            raise InfoGANError(f"contrastive start must be a step >= 0, got {start}")
        if not gap >= 0:
            raise InfoGANError(f"contrastive gap must be >= 0, got {gap}")
        for code in info.codes:
            if gap > 0 and code.bounded and not gap < code.support[1] - code.support[0]:
                raise InfoGANError(f"contrastive gap {gap} does not fit in a code's range "
                                   f"{list(code.support)}")
        self.info = info
        self.weight = float(weight)
        self.start = int(start)
        self.gap = float(gap)
        self.hidden = int(hidden)
        self.head_name = head_name
        self.classifier: PairClassifier | None = None
        self.discriminator: nn.Module | None = None
        self.image_shape: tuple[int, int, int] | None = None

    def config(self) -> dict[str, object]:
        """Settings that rebuild this regularizer (stored in checkpoints)."""
        return {"weight": self.weight, "start": self.start, "gap": self.gap, "hidden": self.hidden,
                "head_name": self.head_name, "image_shape": list(self.image_shape or ())}

    def attach(self, discriminator: nn.Module, image_shape=None, example: torch.Tensor | None = None
               ) -> "ContrastiveRegularizer":
        """Build the pair classifier for images of ``image_shape`` (C, H, W), or of ``example``'s shape, and
        register it in ``discriminator``. Returns ``self``."""
        if self.discriminator is not None:
            raise InfoGANError("this ContrastiveRegularizer is already attached; call remove() first")
        if image_shape is None:
            if example is None:
                raise InfoGANError("attach() needs `image_shape` (C, H, W) or `example` (a batch of images)")
            image_shape = tuple(example.shape[1:])
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise InfoGANError(f"image_shape must be (C, H, W), got {image_shape}")
        self.image_shape = image_shape
        self.classifier = PairClassifier(image_shape, len(self.info.codes), self.hidden)
        add_head(discriminator, self.head_name, self.classifier)
        self.discriminator = discriminator
        return self

    def remove(self) -> nn.Module:
        """Unregister the pair classifier; returns the discriminator."""
        if self.discriminator is None:
            raise InfoGANError("this ContrastiveRegularizer is not attached")
        discriminator = self.discriminator
        remove_head(discriminator, self.head_name)
        self.discriminator, self.classifier = None, None
        return discriminator

    def active(self, step: int) -> bool:
        """Whether G's term is on at ``step`` (from ``start`` on, with a weight above 0)."""
        return step >= self.start and self.weight > 0

    @torch.no_grad()
    def pairs(self, n: int, generator: torch.Generator | None = None, device=None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` pairs of latents ``(latent_a, latent_b, shared)``: the same noise, code ``shared[i]`` equal in
        both, the other codes drawn independently (``gap`` apart for continuous codes)."""
        info = self.info
        device = info._device() if device is None else torch.device(device)
        _, codes_a = info.draw(n, generator=generator, device=device)
        _, codes_b = info.draw(n, generator=generator, device=device)
        shared = torch.randint(len(info.codes), (n,), generator=generator, device=device)
        for i, (key, code) in enumerate(zip(info.keys, info.codes)):
            a, b = codes_a[key], codes_b[key]
            if self.gap > 0 and code.bounded:
                a, b = _apart(a, b, *code.support, self.gap)
            keep = (shared == i).view(-1, *([1] * (a.dim() - 1)))
            codes_a[key], codes_b[key] = torch.where(keep, codes_a[key], a), torch.where(keep, codes_a[key], b)
        latent_a = info.latent_from(codes_a, generator=generator)
        noise = latent_a[:, :info.noise_dim]
        latent_b = info.latent_from(codes_b, noise=noise)
        return latent_a, latent_b, shared

    def logits(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """The classifier's logits ``[n, codes]``: which code does each pair share."""
        if self.classifier is None:
            raise InfoGANError("this ContrastiveRegularizer is not attached (call attach() first)")
        return self.classifier(images_a, images_b)

    def cross_entropy(self, images_a: torch.Tensor, images_b: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """The classifier's cross-entropy on the pairs, unweighted (float32 scalar; ln of the number of codes is
        chance)."""
        if images_a.shape != images_b.shape:
            raise InfoGANError(f"the two images of a pair differ in shape: {tuple(images_a.shape)} and "
                               f"{tuple(images_b.shape)}")
        return F.cross_entropy(self.logits(images_a, images_b).float(), shared)

    def loss(self, images_a: torch.Tensor, images_b: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """``weight`` x ``cross_entropy``. Add it to D's loss on detached images (the classifier learns) and to
        G's loss on the images themselves (G learns)."""
        return self.weight * self.cross_entropy(images_a, images_b, shared)

    @torch.no_grad()
    def accuracy(self, images_a: torch.Tensor, images_b: torch.Tensor, shared: torch.Tensor) -> float:
        """The share of pairs whose shared code the classifier names (1/codes is chance)."""
        return float((self.logits(images_a, images_b).argmax(1) == shared).float().mean())


def _apart(a: torch.Tensor, b: torch.Tensor, low: float, high: float, gap: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uniform draws on [low, high] moved at least ``gap`` apart: squeezed into
    [low + gap/2, high - gap/2], then each pushed gap/2 away from the other (InfoGAN-CR's construction)."""
    scale = (high - low - gap) / (high - low)
    a = low + gap / 2 + (a - low) * scale
    b = low + gap / 2 + (b - low) * scale
    push = torch.where(a < b, -gap / 2, gap / 2)
    return a + push, b - push
