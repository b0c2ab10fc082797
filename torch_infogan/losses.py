"""The plug-in's loss terms as functions of Q's outputs: no module, no hook, no state.

One precision rule for all of them: Q runs and every term is computed in float32 with autocast off
(``head_outputs``), whatever precision the trunk ran in. ``parts`` are Q's raw outputs split per code
(``split_params``); ``indices`` the positions of the codes a term covers. A code's ``weight`` scales its part
of every term, the same way in each.
"""

from __future__ import annotations

import torch
from torch import nn

from torch_infogan.codes import Code, split_params
from torch_infogan.errors import InfoGANError


def head_outputs(codes: list[Code], q: nn.Module, features: torch.Tensor, overcluster: bool = False):
    """Q's raw outputs on the tapped ``features``, split per code: Q in float32, autocast off. With
    ``overcluster``, the pair (those outputs, the logits of Q's overclustering output)."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        if not overcluster:
            return split_params(codes, q(features.float()))
        params, over = q(features.float(), overcluster=True)
        return split_params(codes, params), over


def mi_bounds(codes: list[Code], parts: list[torch.Tensor], values: list[torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each code's MI lower bound H(c) - E[-log Q(c|x)] ``[n_codes]`` for the code ``values`` G's images were
    made from, and (detached) the same bound with Q's unlearned variance fitted to its error on this batch
    (``Code.fitted_nll``; the larger of the two)."""
    nlls = torch.stack([code.nll(part, value).mean() for code, part, value in zip(codes, parts, values)])
    entropies = torch.stack([code.entropy() for code in codes]).to(nlls.device)
    bounds = entropies - nlls
    with torch.no_grad():
        fitted = torch.stack([code.fitted_nll(part, value).mean() for code, part, value in zip(codes, parts, values)])
        fitted_bounds = torch.maximum(entropies - fitted, bounds.detach())
    return bounds, fitted_bounds


def weighted_sum(codes: list[Code], values: torch.Tensor) -> torch.Tensor:
    """``sum_i weight_i * values_i`` over every code."""
    return (torch.tensor([code.weight for code in codes], device=values.device) * values).sum()


def category_nll(codes: list[Code], indices: list[int], parts: list[torch.Tensor],
                 targets: dict[int, torch.Tensor]) -> torch.Tensor:
    """Weighted cross-entropy of Q's posterior of each categorical code in ``indices`` against ``targets[i]``
    (category indices ``[n]``), summed over the codes."""
    total = torch.zeros((), device=parts[indices[0]].device)
    for i in indices:
        total = total + codes[i].weight * codes[i].nll(parts[i], targets[i]).mean()
    return total


def label_targets(labels: torch.Tensor, n: int, k: int, key: str) -> torch.Tensor:
    """``labels`` checked for ``label_loss``: integers ``[n]`` in [0, k) (range checked on the CPU), as long."""
    if not torch.is_tensor(labels) or labels.dtype not in (torch.int64, torch.int32, torch.uint8) or labels.shape != (n,):
        shape = f"{tuple(labels.shape)} {labels.dtype}" if torch.is_tensor(labels) else type(labels).__name__
        raise InfoGANError(f"label_loss() needs integer labels [n] for {n} images, got {shape}")
    if labels.device.type == "cpu" and labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < k):
        raise InfoGANError(f"labels must lie in [0, {k}) for {key}, got {int(labels.min())} to {int(labels.max())}")
    return labels.long()


def consistency_loss(codes: list[Code], indices: list[int], target: list[torch.Tensor], parts: list[torch.Tensor]
                     ) -> torch.Tensor:
    """Weighted cross-entropy from Q's posterior over each categorical code's categories on the images (``target``,
    no gradient) to Q's posterior on their transformed copies (``parts``), summed over the codes."""
    total = torch.zeros((), device=parts[indices[0]].device)
    for i in indices:
        probs = codes[i].posterior(target[i])["probs"]
        total = total - codes[i].weight * (probs * torch.log_softmax(parts[i].float(), dim=1)).sum(1).mean()
    return total


def iic_loss(codes: list[Code], indices: list[int], first: list[torch.Tensor], second: list[torch.Tensor]
             ) -> torch.Tensor:
    """Minus the weighted ``paired_information`` of Q's categories on the images (``first``) and on their
    transformed copies (``second``), summed over the categorical codes; against a learned prior where a code has
    one."""
    total = torch.zeros((), device=first[indices[0]].device)
    for i in indices:
        a, b = (codes[i].posterior(view[i])["probs"] for view in (first, second))
        log_prior = codes[i].log_prior()
        log_prior = None if log_prior is None else log_prior.to(total.device)
        total = total - codes[i].weight * paired_information(a, b, log_prior)
    return total


def prior_fit(code: Code, marginal: torch.Tensor) -> torch.Tensor:
    """KL(P || pi) from category frequencies ``marginal`` P to the code's learned prior pi, weighted."""
    log_prior = torch.log_softmax(code.logits.float(), dim=0).to(marginal.device)
    return code.weight * (marginal * (marginal.clamp_min(1e-12).log() - log_prior)).sum()


def paired_information(first: torch.Tensor, second: torch.Tensor, log_prior: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Mutual information (nats) of the symmetric joint distribution ``mean_n(outer(first_n, second_n))`` of two
    batches of categorical posteriors ``[n, k]``: the quantity IIC maximizes.

    MI = H(P) - H(Z|Z') rewards a uniform marginal P. Given a (learned) prior ``log_prior`` = log pi, its marginal
    entropy H(P) is replaced by H(pi) - KL(P || pi): the value is MI + sum_i P_i log pi_i + H(pi), the same as MI
    for a uniform pi, highest (H(pi)) for consistent, confident categories whose marginal is pi."""
    joint = first.t() @ second / first.shape[0]
    joint = ((joint + joint.t()) / 2).clamp_min(torch.finfo(joint.dtype).tiny)
    marginal = joint.sum(1)
    log_marginal = marginal.log()
    information = (joint * (joint.log() - log_marginal[:, None] - log_marginal[None, :])).sum()
    if log_prior is None:
        return information
    return information + (marginal * log_prior).sum() - (log_prior.exp() * log_prior).sum()
