"""ONNX and HDF5 exporters: parity with torch, file layout, atomicity, bad inputs."""

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from torch_infogan.checkpoint import load_checkpoint
from torch_infogan.data import load_data
from torch_infogan.data import normalize
from torch_infogan.exporters import Encoder, FeatureDataset, export_features, export_onnx
from torch_infogan.exporters.encoder import output_names


@pytest.fixture(scope="module")
def ort():
    """onnxruntime comes with the `cpu` or `gpu` extra; without either, the ONNX tests are skipped (as skipped)."""
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def encoder_onnx(tiny_checkpoint, tmp_path_factory, ort):
    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "encoder.onnx")


def test_onnx_export_report_and_metadata(encoder_onnx, tiny_checkpoint):
    import onnx

    assert encoder_onnx.max_abs_diff <= 1e-4
    assert not encoder_onnx.path.with_name("encoder.onnx.data").exists()  # self-contained
    model = onnx.load(str(encoder_onnx.path))
    meta = {p.key: p.value for p in model.metadata_props}
    from torch_infogan.exporters.onnx import sha256

    assert meta["torch_infogan.codes"] == "cat:10,unif:2"
    assert meta["torch_infogan.checkpoint_sha256"] == sha256(tiny_checkpoint)
    assert meta["torch_infogan.input_shape"] == "['batch', 1, 28, 28]"
    assert meta["torch_infogan.value_range"] == "[0.0, 1.0]"
    assert [o.name for o in model.graph.output] == ["features", "cat0_probs", "unif1_mean", "unif1_std"]


def test_onnx_parity_in_a_plain_onnxruntime_process(encoder_onnx, tiny_checkpoint, tmp_path):
    ckpt = load_checkpoint(tiny_checkpoint)
    encoder = Encoder(ckpt.info).eval()
    batches = {n: torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n)) for n in (1, 2, 257)}
    np.savez(tmp_path / "inputs.npz", **{str(n): x.numpy() for n, x in batches.items()})
    script = (
        "import sys, numpy as np, onnxruntime as ort\n"
        f"s = ort.InferenceSession({str(encoder_onnx.path)!r}, providers=['CPUExecutionProvider'])\n"
        f"x = np.load({str(tmp_path / 'inputs.npz')!r})\n"
        f"np.savez({str(tmp_path / 'outputs.npz')!r}, **{{f'{{n}}_{{i}}': o for n in x.files "
        "for i, o in enumerate(s.run(None, {'images': x[n]}))})\n"
        "assert not any(m.startswith(('torch_infogan', 'torch')) for m in sys.modules), 'imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    got = np.load(tmp_path / "outputs.npz")
    for n, x in batches.items():
        with torch.no_grad():
            expected = encoder(x)
        for i, e in enumerate(expected):
            assert got[f"{n}_{i}"].shape == tuple(e.shape)
            np.testing.assert_allclose(got[f"{n}_{i}"], e.numpy(), atol=1e-4, rtol=0)


def test_generator_export(tiny_checkpoint, tmp_path, ort):
    report = export_onnx(tiny_checkpoint, tmp_path / "g.onnx", part="generator")
    assert report.outputs == ["images"] and report.max_abs_diff <= 1e-4


@pytest.fixture(scope="module")
def digits():
    return load_data().subset(600)


@pytest.fixture(scope="module")
def features_file(tiny_checkpoint, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("h5") / "features.h5"
    export_features(tiny_checkpoint, digits, out, batch_size=128)
    return out


def test_hdf5_layout_and_attributes(features_file, tiny_checkpoint):
    from torch_infogan.exporters.onnx import sha256

    with h5py.File(features_file, "r") as h5:
        assert h5.attrs["format"] == "torch-infogan.features" and h5.attrs["format_version"] == "2"
        assert h5.attrs["codes"] == "cat:10,unif:2"
        assert h5.attrs["checkpoint_sha256"] == sha256(tiny_checkpoint)
        assert h5.attrs["dataset"] == "mnist-10k" and h5.attrs["split"] == "train"
        assert "library_version" in h5.attrs
        assert h5["features"].shape == (600, 1024) and h5["features"].maxshape == (None, 1024)
        assert h5["features"].chunks[1] == 1024 and h5["features"].compression == "gzip"  # whole rows
        assert h5["features"].chunks[0] * 1024 * 4 <= 1 << 20
        # one naming with the ONNX encoder's outputs
        assert [name for name in h5["codes"]] == [f"{n}" for n in output_names(load_checkpoint(tiny_checkpoint).info)[1:]]
        assert h5["codes/cat0_probs"].shape == (600, 10)
        assert h5["codes/unif1_mean"].shape == (600, 2) and h5["codes/unif1_std"].shape == (600, 2)
        assert np.array_equal(h5["index"][:], np.arange(600))
        assert np.array_equal(h5["labels"][:], load_data().labels[:600].numpy())


def test_hdf5_rows_equal_the_torch_encoder(features_file, tiny_checkpoint, digits):
    ckpt = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        expected = Encoder(ckpt.info).eval()(normalize(digits.images[:300]))
    with h5py.File(features_file, "r") as h5:
        np.testing.assert_allclose(h5["features"][:300], expected[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(h5["codes/cat0_probs"][:300], expected[1].numpy(), atol=1e-6)


def test_onnx_engine_and_float16(tiny_checkpoint, digits, features_file, tmp_path, ort):
    out = tmp_path / "f16.h5"
    export_features(tiny_checkpoint, digits.subset(200), out, dtype="float16", engine="onnx")
    with h5py.File(out, "r") as h5, h5py.File(features_file, "r") as ref:
        assert h5["features"].dtype == np.float16
        np.testing.assert_allclose(h5["features"][:].astype(np.float32), ref["features"][:200], atol=2e-2, rtol=2e-3)


def test_feature_dataset_in_dataloader_workers(features_file):
    dataset = FeatureDataset(features_file)
    assert len(dataset) == 600
    loader = torch.utils.data.DataLoader(dataset, batch_size=100, num_workers=2)
    rows = [batch for batch in loader]
    feats = torch.cat([f for f, _ in rows])
    labels = torch.cat([l for _, l in rows])
    with h5py.File(features_file, "r") as h5:
        np.testing.assert_array_equal(feats.numpy(), h5["features"][:])
        np.testing.assert_array_equal(labels.numpy(), h5["labels"][:])
    assert FeatureDataset(features_file, key="codes/cat0_probs")[0][0].shape == (10,)


def test_files_of_format_1_read_by_either_name(features_file, tmp_path):
    """Format 1 stored a code's first posterior part at codes/<key>: those files still read, by either name."""
    old = tmp_path / "format1.h5"
    shutil.copy(features_file, old)
    with h5py.File(old, "r+") as h5:
        h5.attrs["format_version"] = "1"
        h5.move("codes/cat0_probs", "codes/cat0")
        h5.move("codes/unif1_mean", "codes/unif1")
    for name in ("codes/cat0", "codes/cat0_probs"):
        for path in (old, features_file):
            np.testing.assert_array_equal(FeatureDataset(path, key=name).arrays()[0],
                                          FeatureDataset(features_file, key="codes/cat0_probs").arrays()[0])
    np.testing.assert_array_equal(FeatureDataset(old, key="codes/unif1_mean").arrays()[0],
                                  FeatureDataset(features_file, key="codes/unif1").arrays()[0])


def test_an_export_killed_half_way_leaves_nothing_at_the_target(tiny_checkpoint, tmp_path):
    target = tmp_path / "big.h5"
    script = (
        "import numpy as np\n"
        "from torch_infogan.data import load_data\n"
        "from torch_infogan.exporters import export_features\n"
        f"export_features({str(tiny_checkpoint)!r}, load_data(), {str(target)!r}, batch_size=256, "
        "indices=np.tile(np.arange(10000), 50))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(p.name.endswith(".tmp") and p.stat().st_size > 1 << 20
                                                 for p in tmp_path.iterdir()):
            assert proc.poll() is None, "export finished or failed before it could be killed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()


def _export_cli(*args):
    return subprocess.run([sys.executable, "-m", "torch_infogan.cli.export", *args], capture_output=True, text=True)


def test_bad_inputs_are_one_line_errors(tiny_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    notours = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(notours))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    header = bytes([0, 0, 8, 4]) + b"".join(int(v).to_bytes(4, "big") for v in (3, 3, 32, 32))
    (rgb / "images-idx3-ubyte").write_bytes(header + bytes(3 * 3 * 32 * 32))
    cases = [
        (["onnx", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "a.onnx")], "not found"),
        (["onnx", str(truncated), "-o", str(tmp_path / "a.onnx")], "safetensors"),
        (["onnx", str(garbage), "-o", str(tmp_path / "a.onnx")], "safetensors"),
        (["onnx", str(notours), "-o", str(tmp_path / "a.onnx")], "not a torch-infogan checkpoint"),
        (["onnx", str(tiny_checkpoint), "-o", str(tmp_path / "nofolder" / "a.onnx")], "does not exist"),
        (["hdf5", str(tiny_checkpoint), "-o", str(tmp_path / "nofolder" / "f.h5"), "--quiet"], "does not exist"),
        (["hdf5", str(tiny_checkpoint), "--data", f"idx:{rgb}", "-o", str(tmp_path / "f.h5"), "--quiet"], "shape"),
    ]
    from typer.testing import CliRunner

    from torch_infogan.cli.export import app

    proc = _export_cli(*cases[0][0])  # one in a real process, the rest in this one
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and cases[0][1] in proc.stderr, proc.stderr
    for args, message in cases[1:]:
        result = CliRunner().invoke(app, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (args, result.exception)
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.safetensors", "plain.safetensors", "rgb",
                                                          "truncated.safetensors"]


def test_export_cli_happy_path(tiny_checkpoint, tmp_path, ort):
    proc = _export_cli("onnx", str(tiny_checkpoint), "-o", str(tmp_path / "e.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert "largest difference" in proc.stdout
    proc = _export_cli("hdf5", str(tiny_checkpoint), "-o", str(tmp_path / "f.h5"), "--quiet", "--batch-size", "1000")
    assert proc.returncode == 0, proc.stderr
    assert "10000 rows x 1024 features" in proc.stdout

