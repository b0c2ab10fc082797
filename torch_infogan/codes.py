"""Latent code distributions for InfoGAN and the registry that names them."""

from __future__ import annotations

import inspect
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torch_infogan.errors import InfoGANError

_REGISTRY: dict[str, type["Code"]] = {}

_LOG_2PI = math.log(2.0 * math.pi)


def register_code(name: str) -> Callable[[type["Code"]], type["Code"]]:
    """Class decorator that registers a code distribution under ``name``.

    Refuses a duplicate name, and a class that leaves out a member every part of the library relies on:
    ``sample``, ``nll``, ``entropy``, ``posterior``, and ``mean`` (codes without enumerate support) or
    ``enumerate_support`` (codes with it).
    """

    def wrap(cls: type[Code]) -> type[Code]:
        if name in _REGISTRY:
            raise InfoGANError(f"a code named {name!r} is already registered ({_REGISTRY[name].__name__})")
        if not name.isidentifier():
            raise InfoGANError(f"code name {name!r} must be an identifier")
        missing = _missing_members(cls)
        if missing:
            raise InfoGANError(f"code class {cls.__name__} (registering {name!r}) must define "
                               f"{', '.join(missing)}; see the Code base class")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _missing_members(cls: type) -> list[str]:
    """The required members that ``cls`` inherits unimplemented from ``Code`` (or all, if not a Code)."""
    if not (isinstance(cls, type) and issubclass(cls, Code)):
        return ["a subclass of torch_infogan.Code"]
    required = ["sample", "nll", "entropy", "posterior"]
    required.append("enumerate_support" if cls.has_enumerate_support else "mean")
    return [member for member in required if getattr(cls, member) is getattr(Code, member)]


def split_params(codes: Sequence["Code"], q_params: torch.Tensor) -> list[torch.Tensor]:
    """Q's raw outputs ``[n, sum(param_dim)]`` cut into one ``[n, param_dim]`` part per code, in order."""
    widths = [code.param_dim for code in codes]
    if q_params.dim() != 2 or q_params.shape[1] != sum(widths):
        raise InfoGANError(f"Q's outputs have shape {tuple(q_params.shape)}; the codes need [n, {sum(widths)}] "
                           f"(param_dim {' + '.join(map(str, widths))})")
    return list(torch.split(q_params, widths, dim=1))


def list_codes() -> list[str]:
    """Names of the registered code distributions, sorted."""
    return sorted(_REGISTRY)


def get_code(name: str, **cfg) -> "Code":
    """Build the registered code ``name`` with keyword configuration ``cfg``."""
    if name not in _REGISTRY:
        raise InfoGANError(f"unknown code {name!r}; registered codes: {', '.join(list_codes())}")
    try:
        return _REGISTRY[name](**cfg)
    except TypeError as exc:
        raise InfoGANError(f"bad options for code {name!r}: {exc}") from exc


def parse_codes(spec: str) -> list["Code"]:
    """Parse a spec such as ``"cat:10,unif:2:weight=0.5"`` into code objects.

    Each comma-separated token is ``name[:positional][:option=value]...``; the positional value is the
    code's main size (classes for ``cat``, dimensions for the others). The option ``key=NAME`` names the code
    (``cat:10:key=digit``): its key in code dicts, checkpoints, exports and the explorer, which then stays the
    same when codes are inserted before it (``code_keys``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InfoGANError(f"empty code spec; write tokens like 'cat:10,unif:2' (registered codes: {', '.join(list_codes())})")
    codes = []
    for token in spec.split(","):
        token = token.strip()
        parts = token.split(":")
        name = parts[0]
        if name not in _REGISTRY:
            raise InfoGANError(
                f"bad code spec token {token!r}: unknown code {name!r}; registered codes: {', '.join(list_codes())}"
            )
        cls = _REGISTRY[name]
        kwargs: dict[str, object] = {}
        own_key = None
        for i, part in enumerate(parts[1:]):
            if part.startswith("key="):
                own_key = part[4:]
                if not own_key.isidentifier():
                    raise InfoGANError(f"bad code spec token {token!r}: a key is a name of letters, digits and "
                                       f"underscores, not starting with a digit; got {own_key!r}")
                continue
            if "=" in part:
                key, _, raw = part.partition("=")
            elif i == 0:
                key, raw = cls.positional, part
            else:
                raise InfoGANError(f"bad code spec token {token!r}: expected key=value, got {part!r}")
            kwargs[key] = _convert(cls, key, raw, token)
        code = get_code(name, **kwargs)
        code.key = own_key
        codes.append(code)
    code_keys(codes)  # refuses two codes of one key
    return codes


def code_keys(codes: list["Code"]) -> list[str]:
    """The key of each code, in spec order: the one its spec gives (``key=digit``), else its kind and position
    (``cat0``, ``unif1``; these change when a code is inserted before it). Latents' code dicts, checkpoints, ONNX
    outputs, HDF5 datasets and the explorer page all name codes by these keys."""
    keys = [code.key or f"{code.name}{i}" for i, code in enumerate(codes)]
    if len(set(keys)) != len(keys):
        raise InfoGANError(f"two codes have the same key among {', '.join(keys)}: give them different key= names")
    return keys


def format_codes(codes: list["Code"]) -> str:
    """The spec string of ``codes``; ``parse_codes(format_codes(c))`` rebuilds equal codes."""
    return ",".join(code.spec() for code in codes)


def _convert(cls: type["Code"], key: str, raw: str, token: str) -> object:
    params = inspect.signature(cls.__init__).parameters
    if key not in params or key == "self":
        options = [p for p in params if p != "self"]
        raise InfoGANError(f"bad code spec token {token!r}: {cls.name!r} has no option {key!r} (options: {', '.join(options)})")
    default = params[key].default
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        return raw
    except ValueError as exc:
        raise InfoGANError(f"bad code spec token {token!r}: {key}={raw!r} is not a valid {type(default).__name__}") from exc


class Code:
    """Base class: a prior over one latent code and the Q-side likelihood used for its MI bound.

    Subclasses set ``input_dim`` (width fed to G) and ``param_dim`` (width of Q's raw output for this
    code) and implement ``sample``, ``nll``, ``entropy`` and ``posterior``; a code whose values are a
    finite set sets ``has_enumerate_support = True`` and implements ``enumerate_support``, any other
    code implements the ``mean`` property. ``register_code`` refuses a class that leaves one out.
    Everything else (``encode``, ``traversal``, ``held_value``, ``sweep_dims``, ``posterior_parts``,
    ``cluster``) has a default that fits codes of that kind.
    """

    name = "code"
    positional = "dim"
    input_dim: int
    param_dim: int
    #: True for codes whose values are a finite set, listed by ``enumerate_support()``.
    has_enumerate_support: bool = False
    #: ``(low, high)`` for a continuous code whose values lie in that interval, None for an unbounded one (and
    #: for codes with enumerate support).
    support: tuple[float, float] | None = None

    @property
    def bounded(self) -> bool:
        """Whether the code's values lie in the interval ``support``."""
        return self.support is not None

    #: The name the spec gives this code (``cat:10:key=digit``), or None for its kind and position (``code_keys``).
    key: str | None = None

    def __init__(self, weight: float = 1.0):
        if not weight >= 0:
            raise InfoGANError(f"code weight must be >= 0, got {weight}")
        self.weight = float(weight)

    # -- configuration -------------------------------------------------------------------------
    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this code."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    def spec(self) -> str:
        """This code as one spec token (options left out where they hold their default)."""
        params = inspect.signature(type(self).__init__).parameters
        cfg = self.config()
        parts = [self.name, str(cfg[self.positional])]
        for key, value in cfg.items():
            if key == self.positional or value == params[key].default:
                continue
            parts.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
        if self.key:
            parts.append(f"key={self.key}")
        return ":".join(parts)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config() and self.key == other.key

    def __hash__(self) -> int:  # equal codes (same class, configuration and key) hash alike
        return hash((type(self), self.key, tuple(sorted((k, repr(v)) for k, v in self.config().items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"

    # -- distribution interface ----------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``n`` draws from the prior: long ``[n]`` for categorical codes, float ``[n, dim]`` otherwise."""
        raise NotImplementedError

    def encode(self, value: torch.Tensor) -> torch.Tensor:
        """The generator's input for ``value``: float ``[n, input_dim]``."""
        return value.float()

    def nll(self, q_params: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood ``-log Q(c|x)`` per sample ``[n]`` from Q's raw outputs ``[n, param_dim]``."""
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        """The prior's entropy H(c) in nats (a scalar tensor)."""
        raise NotImplementedError

    def fitted_nll(self, q_params: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``nll`` with whatever of Q's likelihood is not learned fitted to this batch's error, per sample
        ``[n]``. Any such Q gives a valid lower bound too; for a code whose Q is wholly learned this is ``nll``."""
        return self.nll(q_params, value)

    def posterior(self, q_params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Q's posterior parameters as plain tensors, keyed by ``posterior_parts``."""
        raise NotImplementedError

    @property
    def posterior_parts(self) -> tuple[str, ...]:
        """The keys ``posterior()`` returns, in output order: ``("probs",)`` or ``("mean", "std")`` by default."""
        return ("probs",) if self.has_enumerate_support else ("mean", "std")

    def enumerate_support(self) -> torch.Tensor:
        """Every value one dimension of the code takes (codes with ``has_enumerate_support`` only)."""
        raise NotImplementedError(f"{type(self).__name__} has no enumerate support "
                                  "(has_enumerate_support is False)")

    @property
    def mean(self) -> torch.Tensor:
        """The prior's mean, float ``[dim]`` (codes without enumerate support define it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define the prior's mean; a code without "
                                  "enumerate support must define the `mean` property")

    # -- pictures and evaluation ---------------------------------------------------------------
    def held_value(self, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """The value ``[1, ...]`` (shaped like ``sample(1)``) the code keeps while another code is swept:
        one random prior draw for codes with enumerate support, the prior's mean otherwise."""
        if self.has_enumerate_support:
            return self.sample(1, generator=generator, device=device)
        return self.mean.to(device).unsqueeze(0)

    def traversal(self, steps: int = 10) -> torch.Tensor:
        """Values to sweep in pictures: ``enumerate_support()``, or ``steps`` points from -2 to 2."""
        if self.has_enumerate_support:
            return self.enumerate_support()
        return torch.linspace(-2.0, 2.0, steps)

    @property
    def sweep_dims(self) -> int:
        """How many traversal pictures the code gets, one per dimension swept: ``dim`` (1 if it has none)."""
        return int(getattr(self, "dim", 1))

    @property
    def num_clusters(self) -> int | None:
        """How many clusters ``cluster()`` assigns images to; None for codes that do not cluster."""
        return None

    def cluster(self, q_params: torch.Tensor) -> torch.Tensor | None:
        """Q's raw outputs ``[n, param_dim]`` as a cluster assignment, long ``[n]``; None if the code has none."""
        return None


@register_code("cat")
class Categorical(Code):
    """Categorical code over ``k`` classes, fed to G one-hot; Q outputs ``k`` logits.

    ``prior="uniform"`` (the paper's) draws every class equally often. ``prior="learned"`` makes the class
    probabilities parameters (``logits``, zeros at the start: uniform) for the generator's optimizer to train, as
    Elastic-InfoGAN does for data whose classes are unbalanced: ``rsample`` draws by Gumbel-softmax, so G's input
    stays differentiable in the logits. ``hard=True`` feeds G the one-hot of the draw with the relaxed sample's
    gradient (straight-through); ``hard=False`` feeds the relaxed sample itself. ``tau`` is the relaxation's
    temperature. ``balance`` (learned prior only, 0 to 1) is how far toward uniform the frequencies IIC's balance
    term asks of Q's categories sit: the learned prior mixed with the uniform one (``log_prior``).
    """

    positional = "k"
    has_enumerate_support = True

    def __init__(self, k: int = 10, weight: float = 1.0, prior: str = "uniform", tau: float = 1.0,
                 hard: bool = True, balance: float = 0.0):
        super().__init__(weight)
        if k < 2:
            raise InfoGANError(f"a categorical code needs k >= 2, got {k}")
        if prior not in ("uniform", "learned"):
            raise InfoGANError(f"a categorical code's prior is 'uniform' or 'learned', got {prior!r}")
        if not tau > 0:
            raise InfoGANError(f"the Gumbel-softmax temperature tau must be > 0, got {tau}")
        if not 0.0 <= balance <= 1.0:
            raise InfoGANError(f"a categorical code's balance is between 0 and 1, got {balance}")
        if balance and prior != "learned":
            raise InfoGANError("balance applies to a learned prior (cat:K:prior=learned:balance=B); the uniform "
                               "prior's balance term already asks for equal categories")
        self.k = int(k)
        self.prior = prior
        self.tau = float(tau)
        self.hard = bool(hard)
        self.balance = float(balance)
        self.input_dim = self.k
        self.param_dim = self.k
        #: The learned prior's class logits (a parameter for G's optimizer), or None for the uniform prior.
        self.logits: nn.Parameter | None = nn.Parameter(torch.zeros(self.k)) if prior == "learned" else None

    @property
    def learned(self) -> bool:
        """Whether the class probabilities are learned (``prior="learned"``)."""
        return self.logits is not None

    @property
    def probs(self) -> torch.Tensor:
        """The prior's class probabilities, float ``[k]`` (detached)."""
        if self.logits is None:
            return torch.full((self.k,), 1.0 / self.k)
        return torch.softmax(self.logits.detach().float(), dim=0)

    def log_prior(self) -> torch.Tensor | None:
        """The log frequencies ``[k]`` (detached) IIC's balance term asks of Q's categories: the learned prior's,
        mixed with the uniform prior by ``balance``; None for the uniform prior."""
        if self.logits is None:
            return None
        if not self.balance:  # exact in log space, however small a share
            return torch.log_softmax(self.logits.detach().float(), dim=0)
        return ((1.0 - self.balance) * self.probs + self.balance / self.k).log()

    def sample(self, n, generator=None, device=None):
        if self.logits is None:
            return torch.randint(0, self.k, (n,), generator=generator, device=device)
        return torch.multinomial(self.probs.to(device), n, replacement=True, generator=generator)

    def rsample(self, n: int, generator: torch.Generator | None = None, device=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws ``[n]`` and G's input for them ``[n, k]``, differentiable in the learned logits: the
        Gumbel-softmax relaxation at ``tau`` (its one-hot with the relaxation's gradient where ``hard``).
        For the uniform prior: ``sample`` and its one-hot, with no gradient."""
        if self.logits is None:
            value = self.sample(n, generator, device)
            return value, self.encode(value)
        uniform = torch.rand(n, self.k, generator=generator, device=device)
        tiny = torch.finfo(uniform.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(tiny, 1.0 - 1e-7)))
        relaxed = torch.softmax((self.logits.to(device).float() + gumbel) / self.tau, dim=1)
        value = relaxed.detach().argmax(dim=1)
        if not self.hard:
            return value, relaxed
        one_hot = F.one_hot(value, self.k).float()
        return value, one_hot + relaxed - relaxed.detach()

    def encode(self, value):
        return F.one_hot(value.long(), self.k).float()

    def nll(self, q_params, value):
        return F.cross_entropy(q_params.float(), value.long(), reduction="none")

    def entropy(self):
        # The learned prior's entropy is the bound's ceiling, not something to maximize: it carries no gradient,
        # or the MI term would pull the prior back to uniform.
        if self.logits is None:
            return torch.tensor(math.log(self.k))
        probs = self.probs
        return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum()

    def posterior(self, q_params):
        return {"probs": torch.softmax(q_params.float(), dim=1)}

    def enumerate_support(self):
        return torch.arange(self.k)

    @property
    def sweep_dims(self):
        return 1  # one picture lists every class

    @property
    def num_clusters(self):
        return self.k

    def cluster(self, q_params):
        return q_params.argmax(dim=1)


class _Continuous(Code):
    """Shared Gaussian-likelihood Q side of continuous codes: fixed std, or a learned, clamped one."""

    def __init__(self, dim: int, weight: float, std: float, learn_std: bool, min_std: float):
        super().__init__(weight)
        if dim < 1:
            raise InfoGANError(f"a continuous code needs dim >= 1, got {dim}")
        if not (std > 0 and min_std > 0):
            raise InfoGANError(f"std and min_std must be > 0, got std={std}, min_std={min_std}")
        self.dim = int(dim)
        self.std = float(std)
        self.learn_std = bool(learn_std)
        self.min_std = float(min_std)
        self.input_dim = self.dim
        self.param_dim = 2 * self.dim if self.learn_std else self.dim

    def _mean_std(self, q_params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_params = q_params.float()
        mean = q_params[:, : self.dim]
        if self.learn_std:
            # softplus keeps std positive with a smooth gradient; the floor stops the bound exploding.
            std = F.softplus(q_params[:, self.dim :]) + self.min_std
        else:
            std = torch.full_like(mean, self.std)
        return mean, std

    def nll(self, q_params, value):
        mean, std = self._mean_std(q_params)
        z = (value.float() - mean) / std
        return (0.5 * z.pow(2) + std.log() + 0.5 * _LOG_2PI).sum(dim=1)

    def fitted_nll(self, q_params, value):
        # Q's means with one variance per dimension set to their mean squared error on this batch: the
        # Gaussian that fits the error best. With Q's std fixed at 1 the bound of a code on [-1, 1] sits
        # below zero even when Q predicts it well; this one shows what Q recovers.
        mean, _ = self._mean_std(q_params)
        error = (value.float() - mean).pow(2)
        var = error.mean(dim=0).clamp_min(1e-12)
        return (0.5 * error / var + 0.5 * var.log() + 0.5 * _LOG_2PI).sum(dim=1)

    def posterior(self, q_params):
        mean, std = self._mean_std(q_params)
        return {"mean": mean, "std": std}


@register_code("unif")
class Uniform(_Continuous):
    """Continuous code uniform on ``[low, high]`` per dimension (the paper's rotation/width codes)."""

    def __init__(self, dim: int = 1, low: float = -1.0, high: float = 1.0, weight: float = 1.0,
                 std: float = 1.0, learn_std: bool = False, min_std: float = 0.05):
        super().__init__(dim, weight, std, learn_std, min_std)
        if not high > low:
            raise InfoGANError(f"uniform code needs high > low, got low={low}, high={high}")
        self.low = float(low)
        self.high = float(high)

    @property
    def support(self) -> tuple[float, float]:
        return self.low, self.high

    def sample(self, n, generator=None, device=None):
        u = torch.rand(n, self.dim, generator=generator, device=device)
        return self.low + (self.high - self.low) * u

    @property
    def mean(self):
        return torch.full((self.dim,), (self.low + self.high) / 2)

    def entropy(self):
        return torch.tensor(self.dim * math.log(self.high - self.low))


@register_code("gauss")
class Gaussian(_Continuous):
    """Continuous code with a standard normal prior per dimension."""

    def __init__(self, dim: int = 1, weight: float = 1.0, std: float = 1.0, learn_std: bool = False,
                 min_std: float = 0.05):
        super().__init__(dim, weight, std, learn_std, min_std)

    def sample(self, n, generator=None, device=None):
        return torch.randn(n, self.dim, generator=generator, device=device)

    @property
    def mean(self):
        return torch.zeros(self.dim)

    def entropy(self):
        return torch.tensor(self.dim * 0.5 * (1.0 + _LOG_2PI))


@register_code("bern")
class Bernoulli(Code):
    """Binary code, each of ``dim`` bits 1 with probability ``p``; Q outputs one logit per bit."""

    has_enumerate_support = True

    def __init__(self, dim: int = 1, p: float = 0.5, weight: float = 1.0):
        super().__init__(weight)
        if dim < 1 or not 0.0 < p < 1.0:
            raise InfoGANError(f"bernoulli code needs dim >= 1 and 0 < p < 1, got dim={dim}, p={p}")
        self.dim = int(dim)
        self.p = float(p)
        self.input_dim = self.dim
        self.param_dim = self.dim

    def sample(self, n, generator=None, device=None):
        probs = torch.full((n, self.dim), self.p, device=device)
        return torch.bernoulli(probs, generator=generator)

    def nll(self, q_params, value):
        return F.binary_cross_entropy_with_logits(q_params.float(), value.float(), reduction="none").sum(dim=1)

    def entropy(self):
        p = self.p
        return torch.tensor(-self.dim * (p * math.log(p) + (1 - p) * math.log(1 - p)))

    def posterior(self, q_params):
        return {"probs": torch.sigmoid(q_params.float())}

    def enumerate_support(self):
        return torch.tensor([0.0, 1.0])
