"""Inference engines (ttm.freeze_for_inference) and the embed stage's per-view cache."""
import h5py
import numpy as np
import pytest
import torch
import yaml
from test_model import build
from test_train_stage import train

from lib.core.errors import PipelineError
from lib.data.embeddings import input_positions, write_embeddings
from lib.model.ttm import ENGINE_TOLERANCE


def test_onnxruntime_embeddings_equal_eager_within_the_tolerance_with_masked_channels():
    pytest.importorskip("onnxruntime")   # opt-in engine (not in requirements.txt)
    windows = torch.randn(70, 3, 512) * torch.tensor([20.0, 1.0, 0.5])[:, None] + torch.tensor([90.0, 0, 0])[:, None]
    windows[:10, 1] = float("nan")          # a masked PPG
    windows[10:20, 2, :200] = float("nan")  # an ECG masked in part
    model = build(context_length=300).eval()
    with torch.no_grad():
        eager = model.embed(windows)
        frozen = model.freeze_for_inference("onnxruntime")
        onnx, partial = frozen.embed(windows), frozen.embed(windows[:5])   # another batch than exported
    assert torch.isfinite(onnx).all() and onnx.shape == eager.shape
    assert 0 < (eager - onnx).abs().max().item() <= ENGINE_TOLERANCE   # not eager run twice
    assert (eager[:5] - partial).abs().max().item() <= ENGINE_TOLERANCE
    with pytest.raises(PipelineError, match="inference engine 'tensorrt'"):
        model.freeze_for_inference("tensorrt")


def test_a_cache_names_its_inputs_and_refuses_missing_ones(tmp_path):
    path = tmp_path / "e.h5"
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_dataset("signals", data=np.zeros((4, 3, 8), dtype=np.float32))
    write_embeddings(path, tmp_path / "w.h5", 4, (3, 2), [(0, np.zeros((4, 3, 2), np.float32))],
                     {"inputs": "map_trend,hr_trend,pp_trend"})
    assert input_positions(path, ["pp_trend", "map_trend"]) == [2, 0]
    with pytest.raises(PipelineError, match="holds map_trend, hr_trend, pp_trend, not abp .* rerun dvc repro embed"):
        input_positions(path, ["abp", "map_trend"])


def test_the_embed_stage_embeds_the_views_inputs_and_train_refuses_a_cache_without_them(tiny_pipeline, tmp_path):
    assert yaml.safe_load((tiny_pipeline / "params.yaml").read_text())["model"]["views"] == ["waveform"]
    for split in ["train", "val"]:
        with h5py.File(tiny_pipeline / "data" / "embeddings" / f"{split}.h5") as f:
            assert f["embeddings"].shape[1] == 3 and f.attrs["inputs"] == "abp,ppg,ecg"
    assert (tiny_pipeline / "models" / "model.pt").is_file()   # train read that cache (the fixture's train stage)
    subset = train(tiny_pipeline, tmp_path / "ppg", {"model": {"input_channels": ["ppg", "ecg"]}})
    assert subset.returncode == 0, subset.stderr[-2000:]
    both = train(tiny_pipeline, tmp_path / "both", {"model": {"views": ["waveform", "trend"]}})
    assert both.returncode != 0
    assert "embeddings cache holds abp, ppg, ecg, not map_trend, hr_trend, pp_trend" in both.stderr
    assert "Traceback" not in both.stderr
