"""A run: the full configuration of one trained network, and its stable id.

A run is everything that determines the numbers it produces: data (dataset, train_fraction,
label_noise), architecture, training, the checkpoint schedule, the probe batch size and the seed.
Its id is the first 16 hex digits of SHA-256 over the canonical JSON of those fields, so
re-planning the same config finds the work already done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
NORMS = ("none", "batchnorm", "layernorm")
INITS = ("kaiming", "xavier", "normal")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: Network families (pipeline/models/build.py).
#: ``custom``: a user's own network, built by the factory that ``model`` names (pipeline/models/factory.py).
FAMILIES = ("mlp", "cnn1d", "cnn2d", "transformer", "custom")
#: Training regularizers (see pipeline/training/regularizers.py).
REGULARIZERS = ("none", "grad_norm", "hessian_trace", "sam", "fisher_sam")
#: Hidden widths of the size presets: the paper's "no", "sure" and "huge" models.
SIZE_PRESETS: dict[str, tuple[int, ...]] = {
    "small": (16,),
    "medium": (64, 64),
    "large": (256, 256, 256),
}
SIZES = (*SIZE_PRESETS, "custom")
#: ``every``: the residual template, an identity edge around every hidden-to-hidden block.
RESIDUALS = ("none", "every")
#: Gated edges added during training: none, chosen by skip-connection synthesis, or as many placed at
#: random (pipeline/propagation/synthesis.py).
AUGMENTS = ("none", "synthesized", "random")


@dataclass(frozen=True)
class RunSpec:
    """One run's complete configuration. Every field enters the run id."""

    dataset: str
    train_fraction: float = 1.0
    label_noise: float = 0.0
    family: str = "mlp"
    size: str = "small"
    widths: tuple[int, ...] = field(default=SIZE_PRESETS["small"])
    activation: str = "relu"
    norm: str = "none"
    dropout: float = 0.0
    init: str = "kaiming"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 30
    #: Train a subsample (``train_fraction`` < 1) for the optimizer steps of the whole training split:
    #: ``epochs`` scaled by 1 / train_fraction (:attr:`epochs_run`), so that a train-fraction sweep varies
    #: the data and not the amount of training.
    fixed_steps: bool = False
    #: Which gradient the optimizer follows, and its strengths: ``penalty`` (lambda of the
    #: gradient-norm and Hessian-trace penalties), ``rho`` (SAM's radius), ``fisher_eta`` (Fisher SAM).
    regularizer: str = "none"
    penalty: float = 0.01
    rho: float = 0.05
    fisher_eta: float = 1.0
    metric_checkpoints: int = 60
    spectral_snapshots: int = 10
    probe_size: int = 256
    hessian_exact_limit: int = 1000
    hvp_budget: int = 320
    seed: int = 0
    residual: str = "none"
    #: Rademacher probes per block for the curvature coupling map at spectral snapshots (0: no map).
    coupling_probes: int = 0
    augment: str = "none"
    #: Synthesis happens at the first metric checkpoint after this fraction of the training steps.
    augment_at: float = 0.25
    edge_budget: int = 2
    trial_steps: int = 10
    #: For a user's own file: a digest of its bytes, target and task (set by the config loader).
    dataset_digest: str = ""
    #: family ``custom``: the factory ``package.module:callable``, called as build(input_shape,
    #: output_size) -> nn.Module; ``blocks``: module paths of its blocks (empty: read off the graph).
    model: str = ""
    blocks: tuple[str, ...] = ()
    #: A folder of existing checkpoints measured as this run (``pipeline measure``): a digest of their
    #: steps and bytes (pipeline/extract/measure.py); empty for a run trained here.
    checkpoint_digest: str = ""

    @property
    def run_id(self) -> str:
        return run_id_of(self)

    @property
    def epochs_run(self) -> int:
        """The epochs the run trains: ``epochs``, or with ``fixed_steps`` ceil(epochs / train_fraction)."""
        return math.ceil(self.epochs / self.train_fraction - 1e-9) if self.fixed_steps else self.epochs

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        d = dict(d)
        d["widths"] = tuple(int(w) for w in d["widths"])
        d["blocks"] = tuple(d.get("blocks") or ())
        return cls(**d)


#: Fields left out of the hash while they hold this value, so that adding an optional field keeps
#: the ids of every run that does not use it.
HASH_OMIT_AT_DEFAULT = {"dataset_digest": "", "regularizer": "none", "penalty": 0.01, "rho": 0.05,
                        "fisher_eta": 1.0, "residual": "none", "coupling_probes": 0, "augment": "none",
                        "augment_at": 0.25, "edge_budget": 2, "trial_steps": 10, "model": "", "blocks": [],
                        "checkpoint_digest": "", "fixed_steps": False}


def run_id_of(spec: RunSpec) -> str:
    """Stable id: sha256 of the canonical JSON (sorted keys) of all fields but HASH_OMIT_AT_DEFAULT's."""
    d = {k: v for k, v in spec.to_dict().items() if HASH_OMIT_AT_DEFAULT.get(k, object()) != v}
    payload = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


RUN_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunSpec)}
