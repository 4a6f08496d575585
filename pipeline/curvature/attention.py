"""Attention with second derivatives, for every curvature route.

``F.scaled_dot_product_attention`` (which ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` /
``DecoderLayer`` and most hand-written attention call) dispatches to a fused kernel: on CPU a
flash-attention kernel whose backward has no derivative of its own (double backward and forward-mode
AD raise ``NotImplementedError``), on CUDA flash or memory-efficient kernels with the same gap. The
curvature engines need second derivatives (Hessian rows, Hessian-vector products by
forward-over-reverse, per-sample Jacobians under ``vmap``), so while they run, attention is computed
by the math backend: the same softmax(Q K^T / sqrt(d) + mask) V written in differentiable primitives,
equal to the fused kernels' output up to rounding, on CPU and CUDA alike.

``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` also have a "fast path" of their own
(``torch._transformer_encoder_layer_fwd``, ``torch._native_multi_head_attention``) that they take in
eval mode when no parameter requires grad, which is how the engines see them: their parameters are
constants and theta_i comes in through ``torch.func``. That path is switched off too
(``torch.backends.mha.set_fastpath_enabled(False)``), so the modules run their documented composite
forward pass.

:func:`second_order_attention` is a context manager and a decorator. The flags it sets are
process-wide, not per thread, so entries are counted across threads: the first sets them, the last
to leave restores what it found (one thread leaving while another still measures must not restore
the fused kernels under it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

_lock = threading.Lock()
_depth = 0
_saved: object = None


@contextmanager
def second_order_attention() -> Iterator[None]:
    """Within it, attention runs on the math backend (twice differentiable), without the fast path."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            fast = torch.backends.mha.get_fastpath_enabled()
            kernel = sdpa_kernel([SDPBackend.MATH])
            kernel.__enter__()
            torch.backends.mha.set_fastpath_enabled(False)
            _saved = (fast, kernel)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                fast, kernel = _saved
                torch.backends.mha.set_fastpath_enabled(fast)
                kernel.__exit__(None, None, None)
                _saved = None
