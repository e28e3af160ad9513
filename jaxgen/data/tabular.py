"""Tabular data: Sachs et al. (2005) protein signalling (causal discovery), German Credit and HELOC (recourse).

All parsing is stdlib + NumPy; files are sha256-verified before they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxgen.data import _files
from jaxgen.data._files import PathLike

SACHS_VARIABLES = ("Raf", "Mek", "Plcg", "PIP2", "PIP3", "Erk", "Akt", "PKA", "PKC", "P38", "Jnk")
SACHS_GROUND_TRUTHS = ("consensus17", "cmu20")
# Lower-case names of sachs.2005.ground.truth.graph.txt (cmu-phil) -> CSV column names.
_CMU_NAMES = {"raf": "Raf", "mek": "Mek", "plc": "Plcg", "pip2": "PIP2", "pip3": "PIP3", "erk": "Erk", "akt": "Akt",
              "pka": "PKA", "pkc": "PKC", "p38": "P38", "jnk": "Jnk"}

# German Credit: (feature name, documented category codes in german.doc order, or None for a numerical attribute).
GERMAN_CREDIT_ATTRIBUTES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("checking_account_status", ("A11", "A12", "A13", "A14")),
    ("duration_months", None),
    ("credit_history", ("A30", "A31", "A32", "A33", "A34")),
    ("purpose", ("A40", "A41", "A42", "A43", "A44", "A45", "A46", "A47", "A48", "A49", "A410")),
    ("credit_amount", None),
    ("savings", ("A61", "A62", "A63", "A64", "A65")),
    ("employment_since", ("A71", "A72", "A73", "A74", "A75")),
    ("installment_rate", None),
    ("personal_status_sex", ("A91", "A92", "A93", "A94", "A95")),
    ("other_debtors", ("A101", "A102", "A103")),
    ("residence_since", None),
    ("property", ("A121", "A122", "A123", "A124")),
    ("age", None),
    ("other_installment_plans", ("A141", "A142", "A143")),
    ("housing", ("A151", "A152", "A153")),
    ("existing_credits", None),
    ("job", ("A171", "A172", "A173", "A174")),
    ("people_liable", None),
    ("telephone", ("A191", "A192")),
    ("foreign_worker", ("A201", "A202")),
)
GERMAN_CREDIT_ENCODINGS = ("integer", "onehot")
HELOC_SPLITS = ("all", "train", "test")


class CausalDataset(NamedTuple):
  """Observational samples with a ground-truth DAG.

  Attributes:
    data: float64 ``[num_samples, num_variables]`` raw measurements.
    variable_names: ``num_variables`` names, in column order.
    adjacency: int32 ``[num_variables, num_variables]``, ``adjacency[i, j] = 1`` iff the edge
      ``variable_names[i] -> variable_names[j]`` is in the ground truth.
  """

  data: np.ndarray
  variable_names: tuple[str, ...]
  adjacency: np.ndarray


class TabularDataset(NamedTuple):
  """Features and binary labels of a tabular classification dataset.

  Attributes:
    features: float32 ``[num_rows, num_features]``.
    labels: int32 ``[num_rows]``, 1 = good (creditworthy / repaid), 0 = bad.
    feature_names: ``num_features`` column names.
    categorical: bool ``[num_features]``, True for integer-coded categorical columns and for one-hot indicator
      columns.
  """

  features: np.ndarray
  labels: np.ndarray
  feature_names: tuple[str, ...]
  categorical: np.ndarray


def _read_csv_floats(path: Path, encoding: str = "utf-8") -> tuple[tuple[str, ...], np.ndarray]:
  """Header and float64 body of a simple numeric CSV (no quoting, no missing values)."""
  lines = [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]
  header = tuple(name.strip() for name in lines[0].split(","))
  rows = [line.split(",") for line in lines[1:]]
  if any(len(r) != len(header) for r in rows):
    raise ValueError(f"{path}: every row must have {len(header)} comma-separated values")
  return header, np.array(rows, np.float64)


def load_sachs(data_dir: PathLike | None = None, ground_truth: str = "consensus17") -> CausalDataset:
  """Loads the observational Sachs et al. (Science 2005) data: 853 cells x 11 phosphoproteins, with a true DAG.

  The samples are condition 1 ("cd3cd28": anti-CD3/CD28 stimulation only), raw fluorescence intensities (all
  positive, heavy right tails; most papers standardise or log-transform). The CSV starts with a UTF-8 byte-order
  mark, which is stripped.

  Args:
    data_dir: data root containing ``sachs/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.
    ground_truth: ``"consensus17"`` (default; the 17-arc consensus network of bnlearn's ``sachs.bif``, the graph
      behind the usual published SHD numbers) or ``"cmu20"`` (cmu-phil's 20-edge alternative: adds PIP2->PKC,
      Plcg->PKC, PIP3->Akt and has PIP3->Plcg instead of Plcg->PIP3).

  Returns:
    :class:`CausalDataset` with ``data`` float64 ``[853, 11]``, ``variable_names`` = :data:`SACHS_VARIABLES` and
    ``adjacency`` int32 ``[11, 11]``.

  Raises:
    ValueError: unknown ``ground_truth``, a file fails its sha256 check, or a file is malformed.
    FileNotFoundError: the dataset is not found.
  """
  _files.check_choice("ground_truth", ground_truth, SACHS_GROUND_TRUTHS)
  graph_file = "ground_truth_17_edges.csv" if ground_truth == "consensus17" else "sachs.2005.ground.truth.graph.txt"
  paths = _files.dataset_files("sachs", ["sachs_cd3cd28.csv", graph_file], data_dir)
  names, data = _read_csv_floats(paths["sachs_cd3cd28.csv"], encoding="utf-8-sig")
  if names != SACHS_VARIABLES:
    raise ValueError(f"sachs_cd3cd28.csv: columns are {names}, expected {SACHS_VARIABLES}")
  index = {name: i for i, name in enumerate(names)}

  edges = []
  text = paths[graph_file].read_text(encoding="utf-8")
  if ground_truth == "consensus17":
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines[0] != "source,target":
      raise ValueError(f"{graph_file}: expected the header 'source,target'")
    edges = [tuple(line.split(",")) for line in lines[1:]]
  else:
    for line in text.split("Graph Edges:", 1)[1].splitlines():
      if "-->" in line:
        source, target = line.split(".", 1)[1].split("-->")
        edges.append((_CMU_NAMES[source.strip()], _CMU_NAMES[target.strip()]))
  adjacency = np.zeros((len(names), len(names)), np.int32)
  for source, target in edges:
    if source not in index or target not in index:
      raise ValueError(f"{graph_file}: edge {source}->{target} names an unknown variable")
    adjacency[index[source], index[target]] = 1
  return CausalDataset(data, names, adjacency)


def load_german_credit(data_dir: PathLike | None = None, encoding: str = "integer") -> TabularDataset:
  """Loads UCI Statlog German Credit (Hofmann, 1994): 1000 applicants, 20 attributes, good/bad credit risk.

  The file is whitespace-separated (one line has a trailing space); 7 attributes are numerical and 13 categorical
  with codes ``A11``...``A202`` documented in ``german.doc`` (see :data:`GERMAN_CREDIT_ATTRIBUTES`, which lists
  every documented code in order, including ``A47`` "vacation", which never occurs).

  Encodings of the categorical attributes:
    * ``"integer"`` (default): the 0-based position of the code in its documented list (A11 -> 0, A12 -> 1, ...);
      20 columns in the attribute order of ``german.doc``.
    * ``"onehot"``: one indicator column per documented code, named ``"<attribute>=<code>"``, in place of the
      attribute (numerical attributes kept as they are); 63 columns.

  Labels: 1 = good (file class 1, 700 rows), 0 = bad (file class 2, 300 rows). The documented cost matrix charges 5
  for predicting good when the truth is bad and 1 for the reverse.

  Args:
    data_dir: data root containing ``credit/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.
    encoding: ``"integer"`` or ``"onehot"``.

  Returns:
    :class:`TabularDataset` (features float32 ``[1000, 20]`` or ``[1000, 63]``).
  """
  _files.check_choice("encoding", encoding, GERMAN_CREDIT_ENCODINGS)
  path = _files.dataset_files("credit", ["german/german.data"], data_dir)["german/german.data"]
  rows = [line.split() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
  if any(len(r) != 21 for r in rows):
    raise ValueError(f"{path}: every row must have 21 whitespace-separated fields")
  columns, names, categorical = [], [], []
  for j, (attribute, codes) in enumerate(GERMAN_CREDIT_ATTRIBUTES):
    values = [r[j] for r in rows]
    if codes is None:
      columns.append(np.array(values, np.float32)[:, None])
      names.append(attribute)
      categorical.append(False)
      continue
    position = {code: i for i, code in enumerate(codes)}
    unknown = set(values) - set(position)
    if unknown:
      raise ValueError(f"{path}: attribute {attribute} has undocumented codes {sorted(unknown)}")
    ids = np.array([position[v] for v in values], np.int64)
    if encoding == "integer":
      columns.append(ids.astype(np.float32)[:, None])
      names.append(attribute)
      categorical.append(True)
    else:
      columns.append(np.eye(len(codes), dtype=np.float32)[ids])
      names.extend(f"{attribute}={code}" for code in codes)
      categorical.extend([True] * len(codes))
  classes = np.array([r[20] for r in rows], np.int64)
  if not set(classes.tolist()) <= {1, 2}:
    raise ValueError(f"{path}: class column must hold 1 (good) or 2 (bad)")
  labels = (classes == 1).astype(np.int32)
  return TabularDataset(np.concatenate(columns, axis=1), labels, tuple(names), np.array(categorical, bool))


def load_heloc(data_dir: PathLike | None = None, split: str = "all") -> TabularDataset:
  """Loads HELOC (FICO xML Challenge 2018) in the CARLA recourse-benchmark version: 21 numeric features.

  CARLA's preprocessing: applicants without any bureau record removed (9,871 of 10,459 rows remain), the two
  categorical delinquency features dropped, special values -7/-8 imputed (no negative values remain).
  Note the data-use terms: FICO's HELOC terms are not an open license (see ``credit/SOURCE.md``).

  Args:
    data_dir: data root containing ``credit/``; default: ``$JAXGEN_DATA``, then ``../shared/data``.
    split: ``"train"`` (7403 rows), ``"test"`` (2468 rows) -- CARLA's fixed split -- or ``"all"`` (default; train
      rows followed by test rows, 9871).

  Returns:
    :class:`TabularDataset` with features float32 ``[n, 21]``, labels int32 (1 = "Good": repaid, 0 = "Bad"),
    the CSV's feature names, and ``categorical`` all False.
  """
  _files.check_choice("split", split, HELOC_SPLITS)
  parts = ["train", "test"] if split == "all" else [split]
  relpaths = [f"heloc/heloc_{part}.csv" for part in parts]
  paths = _files.dataset_files("credit", relpaths, data_dir)
  header, blocks = None, []
  for relpath in relpaths:
    names, values = _read_csv_floats(paths[relpath])
    if header is not None and names != header:
      raise ValueError(f"{relpath}: columns differ from heloc_train.csv")
    header = names
    blocks.append(values)
  values = np.concatenate(blocks, axis=0)
  if header[-1] != "RiskPerformance":
    raise ValueError(f"HELOC: the last column should be RiskPerformance, got {header[-1]}")
  if not np.isin(values[:, -1], (0.0, 1.0)).all():
    raise ValueError("HELOC: RiskPerformance must be 0.0 or 1.0")
  features = values[:, :-1].astype(np.float32)
  return TabularDataset(features, values[:, -1].astype(np.int32), header[:-1], np.zeros(features.shape[1], bool))
