"""sst layers in PyTorch: ``SSTLayer(layer)`` is a ``torch.nn.Module`` whose backward is the
layer's own estimator and backward rule.

    import torch, sst, sst.torch
    pick = sst.torch.SSTLayer(sst.compile(SPEC)["pick"])
    z = pick(theta, step=step)      # theta: a float32/float64 tensor [B..., *shape]
    loss(z).backward()              # theta.grad: the layer's estimator and backward rule

Noise seeds come from torch's default generator (or the module's ``generator``), so
``torch.manual_seed`` makes a run reproducible; ``seed=`` fixes one call's noise. CPU tensors
go to sst and back without copies; tensors on another device make a round trip through host
memory. Eagerly the layer is a ``torch.autograd.Function``; under ``torch.compile`` it is the custom
ops ``sst::forward``/``sst::backward`` (registered with ``torch.library.custom_op``,
``register_fake`` and ``register_autograd``), which give the same numbers for the same seed
(pass ``step`` as a tensor there, so that a new step does not recompile; a seed drawn inside
compiled code comes from inductor's random numbers, not eager torch's).

The ``reinforce`` estimator has no pathwise gradient: ``z`` passes none back, and
``SSTLayer.sample(theta)`` returns a ``Sample`` whose ``surrogate(losses)`` (one loss per sample
and batch row) is added to the loss: its value is 0 and its gradient the score-function
estimate with the spec's baseline (eager mode).
"""

from typing import Optional

import torch

from ._pending import PENDING
from ._sst import Layer

# The layers the ops have seen, with whether each uses `reinforce` (no pathwise gradient).
_LAYERS = []


def _layer_id(layer):
    """A small integer naming ``layer`` in the ops' arguments."""
    for i, (known, _) in enumerate(_LAYERS):
        if known is layer:
            return i
    _LAYERS.append((layer, layer.plan()["estimator"].startswith("reinforce")))
    return len(_LAYERS) - 1


def _run(layer, theta, seed, step, settings):
    mode, temperature, samples, noise = settings
    return _LAYERS[layer][0].forward(
        theta.detach().cpu().numpy(),
        seed=int(seed) % 2**64,
        step=float(step),
        mode=mode,
        temperature=temperature,
        samples=samples,
        noise=noise,
    )


@torch.library.custom_op("sst::forward", mutates_args=())
def _forward(
    theta: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
    layer: int,
    mode: Optional[str],
    temperature: Optional[float],
    samples: int,
    noise: bool,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    fwd = _run(layer, theta, seed, step, (mode, temperature, samples, noise))
    token = PENDING.keep(fwd) if keep else 0
    z = torch.from_numpy(fwd._shared_z()).to(theta.device)
    return z, torch.tensor(token, dtype=torch.int64)


@_forward.register_fake
def _(theta, seed, step, layer, mode, temperature, samples, noise, keep):
    shape = theta.shape if samples == 1 else (samples, *theta.shape)
    return theta.new_empty(shape), theta.new_empty((), dtype=torch.int64)


@torch.library.custom_op("sst::backward", mutates_args=())
def _backward(
    grad_z: torch.Tensor,
    token: torch.Tensor,
    theta: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
    layer: int,
    mode: Optional[str],
    temperature: Optional[float],
    samples: int,
    noise: bool,
) -> torch.Tensor:
    fwd = PENDING.take(int(token))
    if fwd is None:
        fwd = _run(layer, theta, seed, step, (mode, temperature, samples, noise))
    return _host_backward(layer, fwd, grad_z, samples).to(theta.device)


def _host_backward(layer, fwd, grad_z, samples):
    """``dL/dtheta`` on the host for the forward pass ``fwd``, summed over the samples; zero
    for ``reinforce``, whose gradient is the surrogate's."""
    if _LAYERS[layer][1]:
        return torch.zeros(fwd.z.shape[1:] if samples > 1 else fwd.z.shape, dtype=grad_z.dtype)
    grad = _LAYERS[layer][0].backward(fwd, grad_z.detach().cpu().contiguous().numpy())
    if samples > 1:
        grad = grad.sum(axis=0)
    return torch.from_numpy(grad)


@_backward.register_fake
def _(grad_z, token, theta, seed, step, layer, mode, temperature, samples, noise):
    return torch.empty_like(theta)


def _setup_context(ctx, inputs, output):
    theta, seed, step, layer, mode, temperature, samples, noise, _keep = inputs
    z, token = output
    # z is saved only so that autograd refuses a backward pass after z was written into.
    ctx.save_for_backward(theta, seed, step, token, z)
    ctx.settings = (layer, mode, temperature, samples, noise)


def _vjp(ctx, grad_z, _grad_token):
    theta, seed, step, token, _z = ctx.saved_tensors
    grad = _backward(grad_z, token, theta, seed, step, *ctx.settings)
    return (grad,) + (None,) * 8


_forward.register_autograd(_vjp, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The eager path (outside ``torch.compile``): the forward pass stays on autograd's context
    until the backward, with none of the custom op's dispatch."""

    @staticmethod
    def forward(ctx, theta, seed, step, layer, settings, kept):
        fwd = _run(layer, theta, seed, step, settings)
        if kept is not None:
            kept.append(fwd)
        z = torch.from_numpy(fwd._shared_z()).to(theta.device)
        ctx.fwd, ctx.layer, ctx.samples, ctx.device = fwd, layer, settings[2], theta.device
        # z is saved only so that autograd refuses a backward pass after z was written into.
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, grad_z):
        ctx.saved_tensors
        grad = _host_backward(ctx.layer, ctx.fwd, grad_z, ctx.samples).to(ctx.device)
        return grad, None, None, None, None, None


class _Surrogate(torch.autograd.Function):
    """The REINFORCE surrogate of a forward pass: 0, with the gradient
    ``(f - b) * grad log q(z | theta)`` per sample, summed into ``theta``."""

    @staticmethod
    def forward(ctx, theta, losses, fwd, layer, samples):
        ctx.fwd, ctx.layer, ctx.samples = fwd, layer, samples
        ctx.save_for_backward(losses)
        return theta.new_zeros(())

    @staticmethod
    def backward(ctx, scale):
        (losses,) = ctx.saved_tensors
        f = losses.detach().cpu().double().contiguous().numpy()
        grad = torch.from_numpy(_LAYERS[ctx.layer][0].reinforce(ctx.fwd, f))
        if ctx.samples > 1:
            grad = grad.sum(dim=0)
        return (scale * grad.to(scale.device)), None, None, None, None


class Sample:
    """One forward pass through autograd (``SSTLayer.sample``): ``z``, and for ``reinforce``
    layers ``surrogate(losses)``."""

    def __init__(self, z, theta, fwd, module):
        self.z = z
        self._theta, self._fwd, self._module = theta, fwd, module

    def surrogate(self, losses):
        """A scalar to add to the loss: value 0, gradient into ``theta`` the score-function
        estimate for ``losses`` (one per sample and batch row, ``[samples?, B...]``) with the
        spec's baseline; the losses themselves are not differentiated through it."""
        if not _LAYERS[self._module._id][1]:
            raise ValueError(
                f"layer `{self._module.layer.name}`: estimator: the surrogate is for reinforce "
                "layers; this layer's gradient reaches theta through z"
            )
        losses = torch.as_tensor(losses)
        return _Surrogate.apply(
            self._theta, losses, self._fwd, self._module._id, self._module.samples
        )


class SSTLayer(torch.nn.Module):
    """A compiled sst layer as a module: ``forward(theta, step=0, seed=None)`` returns ``z``
    shaped like ``theta`` (``[samples, *theta.shape]`` for ``samples > 1``, whose gradients
    are summed into ``theta``'s).

    ``mode`` (``"hard"``/``"soft"``, default the estimator's), ``temperature`` (overrides the
    spec's schedule), ``samples`` and ``noise`` (``False``: ``w = theta``) hold for every call; ``generator`` is the
    ``torch.Generator`` the noise seeds are drawn from (default: torch's).
    """

    def __init__(
        self,
        layer: Layer,
        *,
        mode: Optional[str] = None,
        temperature: Optional[float] = None,
        samples: int = 1,
        noise: bool = True,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        self.layer = layer
        self.mode = mode
        self.temperature = temperature
        self.samples = samples
        self.noise = noise
        self.generator = generator
        self._id = _layer_id(layer)

    def forward(self, theta: torch.Tensor, step=0.0, seed=None) -> torch.Tensor:
        """``z`` for ``theta`` at training ``step`` (a number or a tensor); ``seed``: an int in
        ``[0, 2**64)`` or an int64 tensor, default a fresh one from the generator."""
        settings = (self.mode, self.temperature, self.samples, self.noise)
        seed = self._seed(seed)
        if not torch.compiler.is_compiling():
            return _Eager.apply(theta, int(seed) % 2**64, float(step), self._id, settings, None)
        if isinstance(seed, int):
            # An int64 tensor carries sst's unsigned 64-bit seeds modulo 2**64.
            seed = torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)
        step = torch.as_tensor(step, dtype=torch.float64)
        keep = torch.is_grad_enabled() and theta.requires_grad
        z, _token = _forward(theta, seed, step, self._id, *settings, keep)
        return z

    def sample(self, theta: torch.Tensor, step=0.0, seed=None) -> Sample:
        """``forward`` keeping the forward pass, for ``Sample.surrogate`` (eager mode)."""
        settings = (self.mode, self.temperature, self.samples, self.noise)
        seed = int(self._seed(seed)) % 2**64
        kept = []
        z = _Eager.apply(theta, seed, float(step), self._id, settings, kept)
        return Sample(z, theta, kept[0], self)

    def _seed(self, seed):
        if seed is None:
            return torch.randint(0, 2**62, (), dtype=torch.int64, generator=self.generator)
        if isinstance(seed, int) and not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), found {seed}")
        return seed

    def extra_repr(self):
        return f"{self.layer.name}: theta {self.layer.shape}"
