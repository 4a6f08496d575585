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
import typing
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu")
NORMS = ("none", "batchnorm", "layernorm")
INITS = ("kaiming", "xavier", "normal")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
#: Network families (pipeline/models/build.py).
#: ``custom``: a user's own network, built by the factory that ``model`` names (pipeline/models/factory.py).
FAMILIES = ("mlp", "cnn1d", "cnn2d", "transformer", "custom")
#: How a data set is prepared (pipeline/datasets/preprocess.py): ``none`` = the inputs as given.
PREPROCESSINGS = ("standard", "none")
#: Training regularizers (see pipeline/training/regularizers.py).
REGULARIZERS = ("none", "grad_norm", "hessian_trace", "sam", "fisher_sam")
#: Hidden widths of the size presets: the paper's "no", "sure" and "huge" models.
SIZE_PRESETS: dict[str, tuple[int, ...]] = {
    "small": (16,),
    "medium": (64, 64),
    "large": (256, 256, 256),
}
SIZES = (*SIZE_PRESETS, "custom")
#: dtypes of the matrix-free products (pipeline/curvature/precision.py).
PRODUCT_DTYPE_NAMES = ("float32", "float64")
#: ``every``: the residual template, an identity edge around every hidden-to-hidden block.
RESIDUALS = ("none", "every")
#: Gated edges added during training: none, chosen by skip-connection synthesis, or as many placed at
#: random (pipeline/training/synthesis.py).
AUGMENTS = ("none", "synthesized", "random")


@dataclass(frozen=True)
class Range:
    """Numbers of the field's type from ``lo`` to ``hi`` (``lo`` excluded when ``lo_open``); a tuple
    field's every item."""

    lo: float
    hi: float
    lo_open: bool = False

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class Applies:
    """A field that applies only while run field ``on`` holds one of ``values``. Elsewhere the config
    loader resets it to its default, so that it cannot split one run into two ids, or, given an
    ``error``, refuses any other value with that message (formatted with the field's ``name`` and
    ``default`` and the ``value`` of ``on``)."""

    on: str
    values: tuple[str, ...]
    error: str = ""


#: The MLP's own options: another family takes each only at its default.
MLP_ONLY = Applies("family", ("mlp",), "is an MLP option; family {value!r} takes only {name} = {default!r}")
#: A user's model (family ``custom``, pipeline/models/factory.py).
CUSTOM_ONLY = Applies("family", ("custom",), "is for a user's model (family = 'custom'), not family {value!r}")
#: The architecture fields a user's factory decides instead.
BUILT_HERE = Applies("family", tuple(f for f in FAMILIES if f != "custom"))
#: Settings of skip-connection synthesis (pipeline/training/synthesis.py).
SYNTHESIS = Applies("augment", tuple(a for a in AUGMENTS if a != "none"))


@dataclass(frozen=True)
class RunField:
    """One run field, declared beside it in :class:`RunSpec`; the config's validation, the run id's
    hash rule, the ``runs`` table's columns and docs/configs.md's field tables are derived from these.

    ``doc``: its line in docs/configs.md, in the table of ``group``; ``range``, ``choices`` or a
    ``bool`` type: the values a config may give it; ``applies``: when it has an effect;
    ``since``: the corpus schema version (:data:`snapshot_loader.schema.SCHEMA_VERSION`) that added it, 1
    from the start; ``omit_at_default``: added after runs existed, so left out of the run id at its
    default, which keeps their ids (a field of version 1 enters every id); ``column``: a column of
    ``runs`` (else in ``config_json`` only); ``user``: a config may set it (else its loader or
    ``pipeline measure`` does). ``name``, ``type`` and
    ``default`` are the dataclass field's (``dataclasses.MISSING``: the field is required).
    """

    doc: str
    group: str = ""
    range: Range | None = None
    choices: tuple[str, ...] = ()
    applies: Applies | None = None
    since: int = 1
    omit_at_default: bool = False
    column: bool = True
    user: bool = True
    name: str = ""
    type: Any = None
    default: Any = None


def run_field(default: Any, group: str, doc: str, **declared: Any) -> Any:
    """A :class:`RunSpec` field: its default (``dataclasses.MISSING``: none) and its :class:`RunField`
    declaration (the other keyword arguments as there)."""
    return field(default=default, metadata={"run_field": RunField(doc, group, **declared)})


_PRESETS = ", ".join(f"`{k}` = {list(v)}" for k, v in SIZE_PRESETS.items())


@dataclass(frozen=True)
class RunSpec:
    """One run's complete configuration. Every field enters the run id, those declared
    ``omit_at_default`` only away from their default (see :class:`RunField`)."""

    dataset: str = run_field(dataclasses.MISSING, "data", "a built-in data set (`pipeline datasets`) or a "
                             "`[[dataset]]` name")
    train_fraction: float = run_field(
        1.0, "data", "share of the training split the run trains on (stratified, at least one row per class)",
        range=Range(0.0, 1.0, lo_open=True))
    label_noise: float = run_field(
        0.0, "data", "share of training rows corrupted: classification moves the label to a random other class; "
        "regression adds N(0, label_noise^2) to the standardized target. `train_*` metrics are scored on the "
        "labels as trained on, `test_*` on clean labels", range=Range(0.0, 0.95))
    family: str = run_field(
        "mlp", "model", "the network: `cnn1d`, `cnn2d` and `transformer` as in [Other model families]"
        "(#other-model-families); `custom`: a user's factory, set by `model`", choices=FAMILIES)
    size: str = run_field(
        "small", "model", f"{_PRESETS} (the paper's \"no\", \"sure\", \"huge\"), or `custom`: explicit `widths`",
        choices=SIZES, applies=BUILT_HERE)
    widths: tuple[int, ...] = run_field(
        SIZE_PRESETS["small"], "model", "hidden widths (giving them sets `size` = `custom`): a flat list is one "
        "architecture, a list of lists a grid axis", range=Range(1, 65536), applies=BUILT_HERE)
    activation: str = run_field("relu", "model", "activation of the hidden blocks", choices=ACTIVATIONS,
                                applies=BUILT_HERE)
    norm: str = run_field("none", "model", "normalization of the hidden blocks", choices=NORMS, applies=MLP_ONLY)
    dropout: float = run_field(0.0, "model", "dropout rate", range=Range(0.0, 0.95), applies=MLP_ONLY)
    init: str = run_field("kaiming", "model", "weight initialization, `normal` = N(0, 0.05^2); biases start at 0",
                          choices=INITS, applies=BUILT_HERE)
    optimizer: str = run_field("adam", "training", "adam (betas 0.9, 0.999), sgd or rmsprop (alpha 0.99)",
                               choices=OPTIMIZERS)
    lr: float = run_field(1e-3, "training", "learning rate", range=Range(0.0, 10.0, lo_open=True))
    momentum: float = run_field(0.0, "training", "momentum of sgd and rmsprop (adam has none)",
                                range=Range(0.0, 0.999))
    weight_decay: float = run_field(0.0, "training", "the optimizer's weight decay", range=Range(0.0, 1.0))
    batch_size: int = run_field(32, "training", "rows per optimizer step", range=Range(1, 1 << 20))
    epochs: int = run_field(30, "training", "passes over the run's training rows (see `fixed_steps`)",
                            range=Range(1, 100_000))
    fixed_steps: bool = run_field(
        False, "training", "`true`: a subsample (`train_fraction` < 1) trains for the optimizer steps of the whole "
        "training split, `epochs` scaled by 1 / `train_fraction` (rounded up), so a train-fraction sweep varies the "
        "data, not the amount of training; `false`: every run trains `epochs` epochs of its own subsample. At "
        "`train_fraction = 1` both settings train the same steps; the field still enters the run id there, so that "
        "a sweep's full-data run belongs to it. Its effect is in `runs.total_steps`",
        omit_at_default=True, column=False, since=8)
    regularizer: str = run_field(
        "none", "training", "which gradient the optimizer follows: `none`; `grad_norm`: the gradient of L + lambda "
        "||grad L||^2; `hessian_trace`: of L + lambda v^T H v with one Rademacher v per step (Hutchinson's unbiased "
        "estimate of lambda tr H); `sam`: the gradient at theta + rho g/||g|| (Foret et al. 2021); `fisher_sam`: "
        "SAM's ascent step in the metric F = diag(1 + eta g*g), eps = rho F^-1 g / sqrt(g^T F^-1 g) (Kim et al. "
        "2022's Fisher SAM, our reading of paper 004's unnamed \"SAM with Riemannian optimization\")",
        choices=REGULARIZERS, applies=MLP_ONLY, omit_at_default=True, since=3)
    penalty: float = run_field(0.01, "training", "lambda of `grad_norm` and `hessian_trace`",
                               range=Range(0.0, 100.0, lo_open=True),
                               applies=Applies("regularizer", ("grad_norm", "hessian_trace")), omit_at_default=True,
                               since=3)
    rho: float = run_field(0.05, "training", "rho, the radius of SAM's ascent step",
                           range=Range(0.0, 10.0, lo_open=True), applies=Applies("regularizer", ("sam", "fisher_sam")),
                           omit_at_default=True, since=3)
    fisher_eta: float = run_field(1.0, "training", "eta of Fisher SAM's metric", range=Range(0.0, 1e6),
                                  applies=Applies("regularizer", ("fisher_sam",)), omit_at_default=True, since=3)
    metric_checkpoints: int = run_field(60, "measurement", "checkpoints at which metrics, norms and gradients are "
                                        "recorded", range=Range(2, 10_000))
    spectral_snapshots: int = run_field(10, "measurement", "how many of those also store weights, spectra and "
                                        "curvature", range=Range(1, 1_000))
    probe_size: int = run_field(
        256, "data", "rows of the training split in the run's fixed probe batch, on which every gradient and "
        "curvature object is computed", range=Range(1, 1 << 20))
    hessian_exact_limit: int = run_field(
        1000, "measurement", "largest block, in parameters, whose loss and layer-norm local Hessians are formed "
        "exactly; the Gauss-Newton block is exact at any width ([curvature.md](curvature.md))",
        range=Range(0, 20_000), since=2)
    hvp_budget: int = run_field(320, "measurement", "the most products a matrix-free row spends (per layer and "
                                "kind above that limit): at least 8 Lanczos runs, each of at most hvp_budget / 8 "
                                "steps, stopping early once their ends are certified and their errors meet their "
                                "targets ([curvature.md](curvature.md))", range=Range(20, 100_000), since=2)
    product_dtype: str = run_field(
        "float32", "measurement", "dtype of the matrix-free rows' products (`float32`, about 3x cheaper, or "
        "`float64`); exact rows and the Lanczos arithmetic are float64 either way", choices=PRODUCT_DTYPE_NAMES,
        omit_at_default=True, column=False, since=10)
    seed: int = run_field(0, "training", "seeds the subsample, label noise, probe batch, initialization, dropout and "
                          "batch order", range=Range(0, 2**31 - 1))
    residual: str = run_field("none", "propagation", "`none`; `every`: an identity edge around every "
                              "hidden-to-hidden block (the template)", choices=RESIDUALS, applies=MLP_ONLY,
                              omit_at_default=True, since=5)
    coupling_probes: int = run_field(
        0, "propagation", "Rademacher probes per block for the curvature coupling map at every spectral snapshot; 0 "
        "measures none", range=Range(0, 10_000), omit_at_default=True, since=5)
    augment: str = run_field(
        "none", "propagation", "`none`; `synthesized`: gated edges chosen from the coupling map; `random`: as many "
        "gated skip edges placed at random. Both need `coupling_probes` >= 2", choices=AUGMENTS, applies=MLP_ONLY,
        omit_at_default=True, since=5)
    augment_at: float = run_field(
        0.25, "propagation", "fraction of training after which synthesis runs (at the first metric checkpoint after "
        "it)", range=Range(0.0, 0.95, lo_open=True), applies=SYNTHESIS, omit_at_default=True, since=5)
    edge_budget: int = run_field(2, "propagation", "most edges synthesis adds", range=Range(1, 100),
                                 applies=SYNTHESIS, omit_at_default=True, since=5)
    trial_steps: int = run_field(10, "propagation", "steps of a gentle trial", range=Range(1, 10_000),
                                 applies=SYNTHESIS, omit_at_default=True, since=5)
    dataset_digest: str = run_field("", "", "a user's data file: a digest of its bytes, target and task (set by the "
                                    "config loader)", omit_at_default=True, column=False, user=False, since=2)
    model: str = run_field(
        "", "model", "a user's network: the factory `package.module:callable`, called as `build(input_shape, "
        "output_size)` -> nn.Module ([models.md](models.md))", applies=CUSTOM_ONLY, omit_at_default=True,
        since=7)
    blocks: tuple[str, ...] = run_field(
        (), "model", "the module paths of the user's network's blocks, in forward order (a flat list is one value, "
        "a list of lists a grid axis; `(own)`, `encoder.(own)`: the parameters the root or `encoder` holds "
        "itself), or `\"depth=K\"`: the modules K levels down; empty: every module that owns parameters, and "
        "the root's own parameters ([models.md](models.md))", applies=CUSTOM_ONLY,
        omit_at_default=True, since=7)
    preprocess: str = run_field(
        "standard", "data", "how the data set is prepared: `standard` (tables: imputed, standardized, one-hot "
        "encoded, constant columns dropped; float arrays standardized per channel; token ids untouched) or `none`: "
        "the inputs exactly as given (a table's numeric columns as they are), so that a model trained elsewhere is "
        "measured on the inputs it was trained on ([configs.md](configs.md#data-of-any-shape))",
        choices=PREPROCESSINGS, omit_at_default=True, column=False, since=9)
    checkpoint_digest: str = run_field(
        "", "", "a folder of existing checkpoints measured as this run (`pipeline measure`): a digest of their "
        "steps and bytes (pipeline/extract/measure.py); empty for a run trained here", omit_at_default=True,
        column=False, user=False, since=7)

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


#: Every run field's declaration, completed with its name, type and default, in declaration order.
RUN_FIELDS: dict[str, RunField] = {
    f.name: dataclasses.replace(f.metadata["run_field"], name=f.name, type=typing.get_type_hints(RunSpec)[f.name],
                                default=f.default)
    for f in dataclasses.fields(RunSpec)}

#: Fields left out of the hash while they hold this value (their default, as :meth:`RunSpec.to_dict`
#: writes it), so that adding an optional field keeps the ids of every run that does not use it.
HASH_OMIT_AT_DEFAULT = {n: list(f.default) if isinstance(f.default, tuple) else f.default
                        for n, f in RUN_FIELDS.items() if f.omit_at_default}


def applying(on: str, value: str) -> tuple[str, ...]:
    """The fields that apply only under a condition on run field ``on``, and do at ``value``."""
    return tuple(n for n, f in RUN_FIELDS.items() if f.applies and f.applies.on == on and value in f.applies.values)


def data_identity(digest: str, preprocess: str = "standard") -> str:
    """What a run's data set is, for the ``datasets`` table's one row per name: the digest of a user's
    file ("" for a built-in one) and, unless ``standard``, the preprocessing (``<digest>/none``)."""
    return digest if preprocess in ("standard", "", None) else f"{digest}/{preprocess}"


def describe_data_identity(identity: str) -> str:
    """A :func:`data_identity` in words, for an error."""
    digest, _, preprocess = identity.partition("/")
    what = f"digest {digest}" if digest else "the built-in one"
    return f"{what}, preprocess {preprocess}" if preprocess else what


def run_id_of(spec: RunSpec) -> str:
    """Stable id: sha256 of the canonical JSON (sorted keys) of all fields but HASH_OMIT_AT_DEFAULT's."""
    d = {k: v for k, v in spec.to_dict().items() if HASH_OMIT_AT_DEFAULT.get(k, object()) != v}
    payload = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]

