"""sst: structured discrete latent layers for NumPy, PyTorch and JAX.

A ``.sst`` spec declares layers (a support set, a perturbation, a regularizer, a temperature,
an estimator and a backward rule); ``sst.compile`` turns it into layers that sample ``z`` for
scores ``theta`` and return ``dL/dtheta`` for a cotangent::

    import numpy as np, sst
    spec = sst.compile("layer pick: categorical(4) { temperature: 0.5 }")
    layer = spec["pick"]
    fwd = layer.forward(np.zeros(4, np.float32), seed=7, mode="soft")
    grad = layer.backward(fwd, np.array([1, 0, 0, 0], np.float32))

``sst.torch`` makes a layer a ``torch.nn.Module`` and ``sst.jax`` a ``jax.custom_vjp``
function. Errors: ``sst.SpecError`` (the spec does not compile; the message shows each
diagnostic with its source line and a caret) and ``sst.RequestError`` (a bad request, one line
naming the layer and the field).
"""

import os

from ._sst import Forward, Layer, RequestError, Spec, SpecError, compile_file, compile_text, supports

__all__ = ["compile", "Spec", "Layer", "Forward", "SpecError", "RequestError", "supports"]


def compile(spec):
    """Compiles a spec: the text of one, or the path of a ``.sst`` file (a ``str`` that names
    an existing file, or an ``os.PathLike``)."""
    if isinstance(spec, os.PathLike):
        return compile_file(os.fspath(spec))
    if not isinstance(spec, str):
        raise TypeError(f"sst.compile takes a spec's text or a path, not {type(spec).__name__}")
    if "\n" not in spec and "{" not in spec and os.path.isfile(spec):
        return compile_file(spec)
    return compile_text(spec)
