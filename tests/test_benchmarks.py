"""The benchmarks that train several runs, smoke-tested at two iterations each."""

import json
import subprocess
import sys

from conftest import ROOT


def test_imbalanced_trains_both_priors_on_a_subset_of_the_asked_ratio(tmp_path):
    out = tmp_path / "imbalanced.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "imbalanced.py"), "--subsets", "2", "--only", "1",
                           "--iterations", "2", "--set", "batch_size=16", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert sorted(row["prior"] for row in rows) == ["learned", "uniform"]
    for row in rows:
        counts = row["class_counts"]
        assert row["ratio"] == 10.0 and len(counts) == 10 and abs(max(counts) / min(counts) - 10.0) < 0.2
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["prior_tv"] <= 1
    learned = next(row for row in rows if row["prior"] == "learned")
    assert abs(sum(learned["probs"]) - 1) < 1e-5 and len(learned["probs"]) == 10
    assert "learned" in proc.stdout and "uniform" in proc.stdout
