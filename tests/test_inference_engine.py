"""Inference engines (lib.model.engines, via ttm.freeze_for_inference) and the embed stage's per-view cache."""
import re

import h5py
import numpy as np
import pytest
import torch
import yaml
from test_model import build
from test_train_stage import train

from lib.core.errors import PipelineError
from lib.core.params import Inference
from lib.data.embeddings import input_positions, write_embeddings
from lib.model.engines import BF16_TOLERANCE, ENGINE_TOLERANCE


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


def masked_windows(n: int) -> torch.Tensor:
    windows = torch.randn(n, 3, 512) * torch.tensor([20.0, 1.0, 0.5])[:, None] + torch.tensor([90.0, 0, 0])[:, None]
    windows[:10, 1] = float("nan")          # a masked PPG
    windows[10:20, 2, :200] = float("nan")  # an ECG masked in part
    return windows


def test_inductor_embeddings_equal_eager_within_the_tolerance_for_any_batch():
    """torch.compile runs one fixed batch: a partial one is zero-padded, and the padding must never
    reach the real rows' outputs nor come back as rows."""
    windows = masked_windows(70)   # one compiled batch of 64 + a padded one of 6
    model = build(context_length=300).eval()
    with torch.no_grad():
        eager = model.embed(windows)
        frozen = model.freeze_for_inference("inductor")
        compiled, partial = frozen.embed(windows), frozen.embed(windows[:5])
    assert compiled.shape == eager.shape and partial.shape == eager[:5].shape
    assert (eager - compiled).abs().max().item() <= ENGINE_TOLERANCE
    assert (eager[:5] - partial).abs().max().item() <= ENGINE_TOLERANCE


def test_bf16_inference_is_applied_and_stays_within_its_tolerance():
    windows = masked_windows(40)
    model = build().eval()
    with torch.no_grad():
        fp32 = model.embed(windows)
        eager_bf16 = model.freeze_for_inference("eager", bf16=True).embed(windows)
        traced_bf16 = model.freeze_for_inference("torchscript", bf16=True).embed(windows)
        model.freeze_for_inference("eager")
        back = model.embed(windows)
    assert eager_bf16.dtype == torch.float32
    assert 1e-4 < (fp32 - eager_bf16).abs().max().item() <= BF16_TOLERANCE   # bf16 really ran, and stayed close
    assert (eager_bf16 - traced_bf16).abs().max().item() <= 1e-5   # the trace keeps autocast's casts
    assert torch.equal(back, fp32)   # freezing again for float32 undoes it


@pytest.mark.parametrize("section, message", [
    ({"engine": "tensorrt", "bf16": False}, "inference.engine='tensorrt': expected one of"),
    ({"engine": "onnxruntime", "bf16": True}, "inference.engine='onnxruntime': runs float32 only"),
    ({"engine": "inductor", "bf16": "yes"}, "inference.bf16='yes': must be true or false"),
    ({"engine": "inductor"}, "inference.bf16 is missing"),
])
def test_inference_params_are_checked_with_one_line(section, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        Inference.from_params({"inference": section})
