"""The run's network for each ``family``.

- ``mlp``: pipeline/models/mlp.py (``widths`` are the hidden widths; residual and gated edges);
- ``cnn1d`` / ``cnn2d``: pipeline/models/cnn.py, ``widths`` are the channels of the convolution
  blocks; ``cnn2d`` reads the features as a square image (the 64 of ``digits`` as 8 x 8);
- ``transformer``: pipeline/models/transformer.py, ``widths[0]`` is d_model and ``len(widths)`` the
  number of encoder layers (2 heads, feed-forward width 2 d_model);
- ``custom``: a user's factory, ``model = "package.module:build"`` (pipeline/models/factory.py).

Every family has blocks (:func:`pipeline.models.block_graph.block_names`), the parameter groups that
every per-block measure and the coupling map are taken over; the MLP's are measured by its Kronecker
engine, the others' by the any-model engine (pipeline/curvature/block_engine.py). Gated edges and
the residual template are MLP options.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.cnn import SmallCNN, pixel_layout
from pipeline.models.factory import build_factory_model
from pipeline.models.mlp import build_model as build_mlp
from pipeline.models.transformer import SmallTransformer
from pipeline.runspec import RunSpec

#: Attention heads of the transformer family.
TRANSFORMER_HEADS = 2


def build_network(spec: RunSpec, d_in: int, d_out: int, feature_names: tuple[str, ...] | None = None) -> nn.Module:
    """The run's network, initialized from ``torch.manual_seed(spec.seed)``; ``feature_names`` place
    the features of a ``cnn2d`` on its image (:func:`pipeline.models.cnn.pixel_layout`)."""
    if spec.family == "mlp":
        return build_mlp(spec, d_in, d_out)
    if spec.family == "custom":
        return build_factory_model(spec.model, (d_in,), d_out, spec.seed, spec.blocks)
    torch.manual_seed(spec.seed)
    if spec.family in ("cnn1d", "cnn2d"):
        dims = 2 if spec.family == "cnn2d" else 1
        shape, pixels = None, None
        if dims == 2:
            layout = pixel_layout(feature_names) if feature_names else None
            if layout is not None:
                shape, pixels = layout
            elif round(math.sqrt(d_in)) ** 2 != d_in:
                raise ValueError(f"family cnn2d reads the features as a square image: data set {spec.dataset!r} has "
                                 f"{d_in} features and no pixel_<row>_<col> names")
        model = SmallCNN(d_in, d_out, tuple(spec.widths), dims=dims, activation=spec.activation,
                         image_shape=shape, pixels=pixels)
    elif spec.family == "transformer":
        d_model = spec.widths[0]
        if d_model % TRANSFORMER_HEADS:
            raise ValueError(f"family transformer: widths[0] = {d_model} (d_model) must be a multiple of "
                             f"{TRANSFORMER_HEADS} heads")
        model = SmallTransformer(d_in, d_out, d_model, TRANSFORMER_HEADS, len(spec.widths), 2 * d_model,
                                 spec.activation)
    else:
        raise ValueError(f"unknown family {spec.family!r}")
    return model
