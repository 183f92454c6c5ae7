import shutil

import pytest
import torch

from conftest import WEIGHTS
from lib.errors import PipelineError
from lib.model import build_model, load_ttm

LORA = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["fc1", "fc2", "attn_layer"]}


def test_missing_weights_are_an_error_never_a_fallback(tmp_path):
    with pytest.raises(PipelineError, match="TTM weights missing"):
        load_ttm(tmp_path)
    shutil.copy(WEIGHTS / "config.json", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(PipelineError, match="could not be loaded"):
        load_ttm(tmp_path)


def test_frozen_backbone_features_include_level():
    model = build_model(WEIGHTS, 3, True, None).eval()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    x = torch.randn(4, 3, 512)
    features = model.features(x)
    assert features.shape == (4, 3 * 192 + 6)
    torch.testing.assert_close(features[:, 576:579], x.mean(dim=2), rtol=1e-4, atol=1e-4)  # RevIN loc


def test_lora_trains_adapters_and_leaves_base_weights_frozen():
    torch.manual_seed(0)
    model = build_model(WEIGHTS, 3, True, LORA)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):  # lora_B starts at 0, so lora_A gets gradients from the second step on
        optimizer.zero_grad()
        model(torch.randn(8, 3, 512)).pow(2).mean().backward()
        optimizer.step()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    for n, p in model.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n


def test_invalid_lora_target_is_an_error():
    with pytest.raises(PipelineError, match="q_proj match no Linear layer"):
        build_model(WEIGHTS, 3, True, {**LORA, "target_modules": ["q_proj"]})


def test_train_zscore_scaling_standardises_inputs_and_turns_revin_off():
    model = build_model(WEIGHTS, 3, True, None, input_scaling="train_zscore").eval()
    model.set_input_stats({"fitted_on": "train", "mean": [80.0, 0.0, 0.0], "std": [15.0, 10.0, 0.3]})
    x = torch.randn(2, 3, 512) * torch.tensor([15.0, 10.0, 0.3])[:, None] + torch.tensor([80.0, 0, 0])[:, None]
    with torch.no_grad():
        out = model.backbone(past_values=((x - model.input_mean[:, None]) / model.input_std[:, None]).transpose(1, 2))
        features = model.features(x)
    torch.testing.assert_close(out.loc, torch.zeros_like(out.loc))       # no per-window scaling
    torch.testing.assert_close(out.scale, torch.ones_like(out.scale))
    assert torch.isfinite(features).all()
    # The level reaches the backbone: the same shape 20 mmHg lower gives other features.
    with torch.no_grad():
        lower = model.features(x - torch.tensor([20.0, 0, 0])[:, None])
    assert not torch.allclose(features[:, :576], lower[:, :576])
    with pytest.raises(PipelineError, match="train split"):
        model.set_input_stats({"fitted_on": "val", "mean": [0, 0, 0], "std": [1, 1, 1]})
    with pytest.raises(PipelineError, match="model.input_scaling"):
        build_model(WEIGHTS, 3, True, None, input_scaling="minmax")
