"""Which stored tensors of a block are point clouds (analyses/topology/stage.py ``block_matrices``)."""

from __future__ import annotations

import numpy as np

from analyses.topology.stage import block_matrices


def test_every_matrix_of_a_block_is_a_cloud_and_the_largest_is_principal() -> None:
    attention = {"norm.weight": np.ones(4), "norm.bias": np.zeros(4), "qkv.weight": np.ones((12, 4)),
                 "qkv.bias": np.zeros(12), "out.weight": np.ones((4, 4)), "out.bias": np.zeros(4)}
    attention["qkv.weight"] = np.arange(48.0).reshape(12, 4)
    attention["qkv.bias"] = np.arange(12.0)
    got = [(n, part, m.shape, b is not None, p) for n, part, m, b, p in block_matrices(attention)]
    assert got == [("qkv.weight", "all", (12, 4), True, True), *(("qkv.weight", p, (4, 4), True, False) for p in "qkv"),
                   ("out.weight", "all", (4, 4), True, False)]
    # a part is its third of the rows, with its third of the bias
    _, _, k_rows, k_bias, _ = block_matrices(attention)[2]
    np.testing.assert_array_equal(k_rows, attention["qkv.weight"][4:8])
    np.testing.assert_array_equal(k_bias, attention["qkv.bias"][4:8])


def test_a_kernel_reads_as_out_channels_by_the_rest_and_vectors_are_not_clouds() -> None:
    conv = {"conv.weight": np.arange(3 * 2 * 3 * 3, dtype=float).reshape(3, 2, 3, 3), "conv.bias": np.zeros(3)}
    ((name, part, matrix, bias, principal),) = block_matrices(conv)
    assert (name, part) == ("conv.weight", "all") and matrix.shape == (3, 18) and principal
    np.testing.assert_array_equal(matrix[1], conv["conv.weight"][1].reshape(-1))
    tokens = {"weight": np.ones((5, 4)), "bias": np.ones((5, 4))}  # a 2-D bias is not a cloud of its own
    assert [(n, b) for n, _, _, b, _ in block_matrices(tokens)] == [("weight", None)]
    assert block_matrices({"weight": np.ones(3), "bias": np.zeros(3), "num_batches_tracked": np.array(0)}) == []
