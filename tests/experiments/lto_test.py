"""Tests for the lto experiment (conv4 pre-training, LTO / naive obstruction, four few-shot attackers)."""

import json

import numpy as np
import pytest

from jaxgen.experiments import reproduce
from jaxgen.experiments import lto as experiment

_TOY = dict(datasets=("mnist",), image_size=16, features=8, pretrain_steps=25, mnist_pretrain_size=500,
            mnist_pool_per_class=10, mnist_test_per_class=5, def_steps=1, def_shots=2, obstruct_shots=2,
            outer_steps=10, variants=("lto", "naive"), k_shot=2, eval_reps=1, attack_steps=(5, 2, 2))


# slow: ~1-2 min on 2 cores; the default run executes the same pipeline through its colab in fast mode
# (tests/colabs_test.py). This test's finer assertions run with `pytest -m slow`.
@pytest.mark.slow
def test_toy_run_writes_files_and_a_complete_table(tmp_path):
  result = reproduce("lto", quick=True, out_dir=tmp_path, progress=False, **_TOY)
  run_dir = tmp_path / "lto"
  for name in ("config.json", "result.json", "run.json", "report.md", "metrics.jsonl", "accuracy_bars.png",
               "outer_loss.png", "details.json"):
    assert (run_dir / name).exists(), name
  saved = json.loads((run_dir / "result.json").read_text())
  assert saved["experiment"] == "lto" and isinstance(saved["held"], bool) and saved["held"] == result["held"]
  mnist = json.loads((run_dir / "details.json").read_text())["mnist"]
  assert mnist["restricted"] == [0, 1, 2] and mnist["n_way"] == 10
  for method in experiment.METHODS:
    for model in ("before", "lto", "naive"):
      assert saved["metrics"][f"mnist/{method}/{model}/acc_r"] == mnist["table"][method][model]["acc_r"]
  assert set(mnist["table"]) == set(experiment.METHODS)
  for method, row in mnist["table"].items():
    assert set(row) == {"before", "lto", "naive"}, method
    for model in ("before", "lto", "naive"):
      assert 0.0 <= row[model]["acc_r"] <= 1.0 and 0.0 <= row[model]["acc_o"] <= 1.0
    assert row["lto"]["drop_ratio_str"].rstrip("*").replace(".", "").lstrip("-").isdigit()
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  outer = [r for r in records if r.get("phase") == "lto"]
  assert [r["step"] for r in outer] == list(range(1, 11))
  assert all(np.isfinite(r["loss"]) for r in outer)
  assert "DropRatio" in (run_dir / "report.md").read_text()


def test_config_validation(tmp_path):
  with pytest.raises(ValueError, match="restricted_alphabet"):
    reproduce("lto", quick=True, out_dir=tmp_path, progress=False, restricted_alphabet="Klingon")
  with pytest.raises(ValueError, match="mnist_restricted"):
    reproduce("lto", quick=True, out_dir=tmp_path, progress=False, mnist_restricted=(3, 12))
  with pytest.raises(ValueError, match="datasets"):
    reproduce("lto", quick=True, out_dir=tmp_path, progress=False, datasets=("cifar",))
  with pytest.raises(ValueError, match="not in the Omniglot evaluation set"):
    reproduce("lto", quick=True, out_dir=tmp_path, progress=False, alphabets=("Atlantean", "Klingon"),
              restricted_alphabet="Atlantean")


@pytest.mark.slow
def test_quick_preset(tmp_path):
  result = reproduce("lto", quick=True, out_dir=tmp_path, progress=False)
  assert isinstance(result["held"], bool)
  assert all(f"omniglot/{m}/lto/drop_ratio" in result["metrics"] for m in experiment.METHODS)
