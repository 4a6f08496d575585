"""The run's network for each ``family``.

- ``mlp``: pipeline/models/mlp.py (``widths`` are the hidden widths; residual and gated edges);
- ``cnn1d`` / ``cnn2d``: pipeline/models/cnn.py, ``widths`` are the channels of the convolution
  blocks; on a table ``cnn2d`` reads the features as a square image (the 64 of ``digits`` as 8 x 8),
  on images (N, C, H, W) (``digits_images``) it reads them as they are; ``cnn1d`` reads a table row
  as a one-channel signal, or signals (N, C, T);
- ``transformer``: pipeline/models/transformer.py, ``widths[0]`` is d_model and ``len(widths)`` the
  number of encoder layers (2 heads, feed-forward width 2 d_model); on a table every feature is a
  token, on token ids (N, T) (``tate_titles``) an embedding and a positional embedding make them;
- ``custom``: a user's factory, ``model = "package.module:build"`` (pipeline/models/factory.py).

Every family has blocks (:func:`pipeline.models.block_graph.block_names`), the parameter groups that
every per-block measure and the coupling map are taken over, by one curvature driver
(pipeline/curvature/engine.py): the MLP's Linear blocks by their Kronecker form, the others' by their
parameter group (pipeline/curvature/block_engine.py). Gated edges and
the residual template are MLP options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.models.cnn import SmallCNN, pixel_layout
from pipeline.models.factory import build_factory_model
from pipeline.models.mlp import build_model as build_mlp
from pipeline.models.transformer import SmallTransformer
from pipeline.runspec import RunSpec

#: Attention heads of the transformer family.
TRANSFORMER_HEADS = 2


def build_network(spec: RunSpec, input_shape: int | Sequence[int], d_out: int,
                  feature_names: tuple[str, ...] | None = None, *, vocab_size: int = 0,
                  example: torch.Tensor | np.ndarray | None = None) -> nn.Module:
    """The run's network, initialized from ``torch.manual_seed(spec.seed)``, for inputs of one row's
    shape ``input_shape`` (an int: a table of that many features). ``vocab_size`` > 0: the inputs are
    token ids below it. ``feature_names`` place a table's features on a ``cnn2d``'s image
    (:func:`pipeline.models.cnn.pixel_layout`); ``example``, rows of the real data, is the batch a
    custom factory's model is checked on (else random normal rows, which token ids cannot be).

    Which input each family reads: ``mlp`` a table (N, d) only; ``cnn1d`` a table (each row a
    one-channel signal) or signals (N, C, T); ``cnn2d`` a table (read as a square image) or images
    (N, C, H, W); ``transformer`` a table (every feature a token) or token ids (N, T). Any other
    pairing is a ValueError naming the family and the shape."""
    shape = (int(input_shape),) if isinstance(input_shape, int | np.integer) else tuple(int(k) for k in input_shape)
    if spec.family == "custom":
        return build_factory_model(spec.model, shape, d_out, spec.seed, spec.blocks, example=example)
    problem = family_problem(spec.family, shape, vocab_size, spec.dataset)
    if problem:
        raise ValueError(problem)
    d_in = shape[0] if len(shape) == 1 else math.prod(shape)
    if spec.family == "mlp":
        return build_mlp(spec, d_in, d_out)
    torch.manual_seed(spec.seed)
    if spec.family in ("cnn1d", "cnn2d"):
        dims = 2 if spec.family == "cnn2d" else 1
        if len(shape) > 1:  # signals (C, T) or images (C, H, W): read as they are
            return SmallCNN(d_in, d_out, tuple(spec.widths), dims=dims, activation=spec.activation,
                            input_shape=shape)
        image_shape, pixels = None, None
        if dims == 2:
            layout = pixel_layout(feature_names) if feature_names else None
            if layout is not None:
                image_shape, pixels = layout
            elif round(math.sqrt(d_in)) ** 2 != d_in:
                raise ValueError(f"family cnn2d reads the features as a square image: data set {spec.dataset!r} has "
                                 f"{d_in} features and no pixel_<row>_<col> names")
        model = SmallCNN(d_in, d_out, tuple(spec.widths), dims=dims, activation=spec.activation,
                         image_shape=image_shape, pixels=pixels)
    elif spec.family == "transformer":
        d_model = spec.widths[0]
        if d_model % TRANSFORMER_HEADS:
            raise ValueError(f"family transformer: widths[0] = {d_model} (d_model) must be a multiple of "
                             f"{TRANSFORMER_HEADS} heads")
        model = SmallTransformer(d_in, d_out, d_model, TRANSFORMER_HEADS, len(spec.widths), 2 * d_model,
                                 spec.activation, vocab_size=vocab_size)
    else:
        raise ValueError(f"unknown family {spec.family!r}")
    return model


def family_problem(family: str, input_shape: Sequence[int], vocab_size: int, dataset: str) -> str | None:
    """Why built-in ``family`` cannot read rows of ``input_shape`` (token ids when ``vocab_size`` > 0),
    or None: an MLP reads a table only (no flattening: its engine reads X as the first block's input),
    a CNN float rows only, the transformer a table or token ids."""
    shape, tokens = tuple(input_shape), vocab_size > 0
    accepts = {"mlp": not tokens and len(shape) == 1, "cnn1d": not tokens and len(shape) in (1, 2),
               "cnn2d": not tokens and len(shape) in (1, 3), "transformer": len(shape) == 1}
    if family not in accepts or accepts[family]:
        return None
    kind = "token ids" if tokens else ("a table" if len(shape) == 1 else "arrays")
    return f"family {family} cannot read data set {dataset!r}: its rows are {kind} of shape {shape}; {_READS[family]}"


#: What each built-in family reads, for the error of a data set it cannot.
_READS = {"mlp": "an MLP reads a table of features (N, d): use cnn1d, cnn2d, transformer or a custom model",
          "cnn1d": "cnn1d reads a table or float signals (N, C, T)",
          "cnn2d": "cnn2d reads a table or float images (N, C, H, W)",
          "transformer": "transformer reads a table or token ids (N, T)"}


def network_for(spec: RunSpec, dataset) -> nn.Module:
    """:func:`build_network` for a prepared data set (pipeline/datasets/preprocess.py's
    ``PreparedDataset``: its input shape, outputs, feature names, vocabulary and first two rows)."""
    return build_network(spec, dataset.input_shape, dataset.output_dim, dataset.feature_names,
                         vocab_size=dataset.vocab_size, example=dataset.X[:2])
