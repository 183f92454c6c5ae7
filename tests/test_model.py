import dataclasses
import shutil

import pytest
import torch
from conftest import WEIGHTS
from model_helpers import LORA, model_config
from transformers import PreTrainedModel

from lib.core import params
from lib.core.config import ModelConfig
from lib.core.errors import PipelineError
from lib.core.params import Lora, Model
from lib.core.schema import TREND_INPUTS
from lib.model import ttm
from lib.model.ttm import build_model, load_checkpoint, load_ttm, mixer_layer_names, save_checkpoint


def build(**overrides):
    return build_model(model_config(**overrides))


def trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_missing_weights_are_an_error_never_a_fallback(tmp_path):
    with pytest.raises(PipelineError, match="TTM weights missing"):
        load_ttm(tmp_path)
    shutil.copy(WEIGHTS / "config.json", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(PipelineError, match="could not be loaded"):
        load_ttm(tmp_path)


def test_fm_mode_trains_a_linear_head_on_embeddings_with_the_level():
    model = build().eval()
    assert trainable(model) == ["head.0.weight", "head.0.bias"]
    x = torch.randn(4, 3, 512) + torch.tensor([80.0, 0, 0])[:, None]
    embeddings = model.embed(x)
    assert embeddings.shape == (4, 3, 192 + 2)
    torch.testing.assert_close(embeddings[..., 192], x.mean(dim=2), rtol=1e-4, atol=1e-4)  # RevIN loc
    context = torch.tensor([[80.0, -1.0, 70.0, 45.0, 1.0, 1.0]]).repeat(4, 1)   # ... and the PPG/ECG observed flags
    assert model.head_features(embeddings, context).shape == (4, 3 * 194 + 6)
    assert model.head[0].in_features == 3 * 194 + 6


def test_level_features_off_leaves_only_the_pooled_embeddings():
    model = build(level_features=False)
    assert model.context == [] and model.head[0].in_features == 3 * 192


def test_context_features_follow_the_input_channels():
    assert build(channels=["ppg", "ecg"]).context == ["hr", "ppg_observed", "ecg_observed"]
    assert build(channels=["abp"]).context == ["map", "map_slope", "pp"]


def test_channels_are_embedded_independently():
    full, ppg_ecg = build().eval(), build(channels=["ppg", "ecg"]).eval()
    x = torch.randn(2, 3, 512)
    with torch.no_grad():
        torch.testing.assert_close(full.embed(x)[:, 1:], ppg_ecg.embed(x[:, 1:]))


def test_missing_context_is_imputed_with_the_train_mean():
    model = build().eval()
    model.feature_mean.normal_()
    embeddings, context = torch.randn(2, 3, 194), torch.tensor([[80.0, float("nan"), 70.0, 45.0, 1.0, 1.0]] * 2)
    with torch.no_grad():
        imputed = context.clone()
        imputed[:, 1] = model.feature_mean[-5]  # map_slope's train mean
        out = model.head_forward(embeddings, context)
        torch.testing.assert_close(out, model.head_forward(embeddings, imputed))
    assert torch.isfinite(out).all()


def test_unfreezing_the_last_blocks_trains_exactly_those_and_the_head_is_chosen_apart():
    model = build(unfreeze_last_n_blocks=2, head_type="mlp")
    layers = mixer_layer_names(model.backbone)
    assert len(layers) == 6
    backbone = [n for n in trainable(model) if n.startswith("backbone.")]
    assert backbone and all(n.startswith(tuple(f"backbone.{layer}." for layer in layers[-2:])) for n in backbone)
    assert [type(m).__name__ for m in model.head] == ["Linear", "GELU", "Dropout", "Linear", "GELU", "Dropout",
                                                        "Linear"]
    assert [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)] == [256, 128, 1]
    # head.type and head.activation do not depend on the mode
    assert [type(m).__name__ for m in build(unfreeze_last_n_blocks=2).head] == ["Linear"]
    assert [type(m).__name__ for m in build(head_type="mlp", activation="relu", hidden_dims=[8]).head] == \
        ["Linear", "ReLU", "Dropout", "Linear"]
    with pytest.raises(PipelineError, match="head.activation"):
        build(head_type="mlp", activation="swish")
    assert set(params.ACTIVATIONS) == set(ttm.ACTIVATIONS)   # params.yaml's choices are the ones make_head builds
    with pytest.raises(PipelineError, match="unfreeze_last_n_blocks=7"):
        build(unfreeze_last_n_blocks=7)


def test_lora_trains_adapters_and_leaves_base_weights_frozen():
    torch.manual_seed(0)
    model = build(lora=LORA)
    names = trainable(model)
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert all("lora_" in n or n.startswith("head.") for n in names)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):  # lora_B starts at 0, so lora_A gets gradients from the second step on
        optimizer.zero_grad()
        model(torch.randn(8, 3, 512), torch.randn(8, 6)).pow(2).mean().backward()
        optimizer.step()
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        if n in base_before:
            assert p.grad is None and torch.equal(p, base_before[n]), n


def test_lora_with_unfrozen_blocks_puts_adapters_only_on_the_frozen_layers():
    model = build(unfreeze_last_n_blocks=2, lora=LORA)
    last_block = "mlp_mixer_encoder.mixers.2."
    names = trainable(model)
    assert any(last_block in n and "lora_" not in n for n in names)     # unfrozen base weights
    assert not any(last_block in n and "lora_" in n for n in names)     # no adapter there
    assert any("mixers.0." in n and "lora_" in n for n in names)


def test_invalid_lora_target_is_an_error():
    with pytest.raises(PipelineError, match="q_proj match no Linear layer"):
        build(lora=dataclasses.replace(LORA, target_modules=("q_proj",)))


def test_regression_may_not_read_the_abp_it_estimates():
    with pytest.raises(PipelineError, match="remove abp from model.input_channels"):
        build(task="reg")
    model = build(channels=["ppg", "ecg"], task="reg")
    assert model.head[-1].out_features == 3


def test_checkpoint_round_trip_and_errors(tmp_path):
    config = model_config(unfreeze_last_n_blocks=1, lora=LORA, hidden_dims=[16], head_type="mlp")
    model = build_model(config).eval()
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    save_checkpoint(tmp_path / "m.pt", model, config, {"horizon_min": 5.0})
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    x, ctx = torch.randn(3, 3, 512), torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, ctx), model(x, ctx))
    with pytest.raises(PipelineError, match="not found: run the train stage"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:1000])
    with pytest.raises(PipelineError, match="bad.pt is corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    save_checkpoint(tmp_path / "other.pt", model, dataclasses.replace(config, hidden_dims=(8,)), {"horizon_min": 5.0})
    with pytest.raises(PipelineError, match="does not match the model"):
        load_checkpoint(tmp_path / "other.pt")


def test_train_zscore_scaling_standardises_inputs_and_turns_revin_off():
    model = build(input_scaling="train_zscore").eval()
    model.set_input_stats({"fitted_on": "train", "channels": ["abp", "ppg", "ecg"],
                           "mean": [80.0, 0.0, 0.0], "std": [15.0, 10.0, 0.3]})
    x = torch.randn(2, 3, 512) * torch.tensor([15.0, 10.0, 0.3])[:, None] + torch.tensor([80.0, 0, 0])[:, None]
    with torch.no_grad():
        out = model.backbone(past_values=((x - model.input_mean[:, None]) / model.input_std[:, None]).transpose(1, 2))
        embeddings = model.embed(x)
        lower = model.embed(x - torch.tensor([20.0, 0, 0])[:, None])
    torch.testing.assert_close(out.loc, torch.zeros_like(out.loc))       # no per-window scaling
    torch.testing.assert_close(out.scale, torch.ones_like(out.scale))
    assert torch.isfinite(embeddings).all()
    # The level reaches the backbone: the same shape 20 mmHg lower gives other embeddings.
    assert not torch.allclose(embeddings[:, 0, :192], lower[:, 0, :192])
    with pytest.raises(PipelineError, match="train split"):
        model.set_input_stats({"fitted_on": "val", "channels": ["abp", "ppg", "ecg"], "mean": [0] * 3, "std": [1] * 3})
    with pytest.raises(PipelineError, match="model.input_scaling"):
        build(input_scaling="minmax")


def test_shorter_context_is_zero_padded_and_masked_the_granite_tsfm_way():
    model = build(context_length=256).eval()
    x = torch.randn(2, 3, 512)
    changed_past = x.clone()
    changed_past[:, :, :256] = torch.randn(2, 3, 256) * 50      # samples the model must not see
    padded = torch.cat([torch.zeros(2, 256, 3), x[:, :, 256:].transpose(1, 2)], dim=1)
    mask = torch.cat([torch.zeros(2, 256, 3), torch.ones(2, 256, 3)], dim=1)
    with torch.no_grad():
        embeddings = model.embed(x)
        torch.testing.assert_close(model.embed(changed_past), embeddings)
        manual = model.backbone(past_values=padded, past_observed_mask=mask)
        # RevIN statistics come from the 256 real samples only
        torch.testing.assert_close(manual.loc.transpose(1, 2)[..., 0], x[:, :, 256:].mean(dim=2))
    torch.testing.assert_close(embeddings[..., :192], manual.last_hidden_state.mean(dim=2))
    with torch.no_grad():
        full = build().eval().embed(x)
    assert not torch.allclose(full, embeddings)
    with pytest.raises(PipelineError, match="model.context_length=600"):
        build(context_length=600)
    with pytest.raises(PipelineError, match="model.context_length=256: must be 1-128"):
        model.embed(torch.randn(1, 3, 128))


def test_frozen_inference_backbone_gives_the_eager_outputs_and_no_new_state():
    """freeze_for_inference("torchscript") (trace + freeze) is an inference speed-up, never a new model."""
    windows = torch.randn(150, 3, 512) * torch.tensor([20.0, 1.0, 0.5])[:, None] + torch.tensor([90.0, 0, 0])[:, None]
    for config in [{}, {"context_length": 300}, {"lora": Lora(r=4, alpha=8, dropout=0.1,
                                                                     target_modules=("fc1", "fc2"))}]:
        model = build(hidden_dims=[16], head_type="mlp", **config).eval()
        keys = set(model.state_dict())
        with torch.no_grad():
            eager = model.embed(windows)
            frozen = model.freeze_for_inference("torchscript").embed(windows)
            partial = model.embed(windows[:7])     # any batch size, not only the traced one
        tolerance = 1e-5 if "lora" in config else 0.0   # LoRA's fused adds round differently
        assert (eager - frozen).abs().max().item() <= tolerance, config
        assert (eager[:7] - partial).abs().max().item() <= tolerance, config
        assert set(model.state_dict()) == keys


def test_forward_is_the_head_on_the_embeddings():
    model = build(unfreeze_last_n_blocks=1, hidden_dims=[16], head_type="mlp").eval()
    x, ctx = torch.randn(5, 3, 512), torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(model(x, ctx), model.head_forward(model.embed(x), ctx))


def test_a_checkpoint_from_before_head_type_rebuilds_its_head():
    """Older checkpoints hold no head_type: fm had the linear head, ft the GELU MLP."""
    for blocks, expected in [(0, "linear"), (1, "mlp")]:
        old = {k: v for k, v in model_config(unfreeze_last_n_blocks=blocks).to_dict().items()
               if k not in ("head_type", "activation")}
        assert type(model_config()).from_dict(old).head_type == expected


def test_the_checkpoint_config_rebuilds_the_same_model_config(tmp_path):
    config = model_config(lora=LORA, channels=["ppg", "ecg"], hidden_dims=[16], head_type="mlp")
    save_checkpoint(tmp_path / "m.pt", build_model(config), config, {"horizon_min": 5.0})
    _, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["config"] == config.to_dict() and type(config).from_dict(ckpt["config"]) == config


def test_tracing_ttm_raises_no_transformers_loss_warning(capfd):
    """transformers' loss lookup by class name knows no TTM class; TorchScript tracing reads every
    attribute, so each TTM PreTrainedModel part says it has no transformers loss."""
    model = build()
    parts = [m for m in model.modules() if isinstance(m, PreTrainedModel)]
    assert len(parts) >= 2 and all(m.loss_function is None for m in parts)
    model.freeze_for_inference()
    assert "loss_type" not in capfd.readouterr().err


@pytest.mark.parametrize("views", [("trend",), ("waveform", "trend")])
def test_views_choose_the_inputs_and_round_trip_through_the_checkpoint(tmp_path, views):
    config = model_config(views=views)
    inputs = [*(config.channels if "waveform" in views else ()), *TREND_INPUTS]
    model = build_model(config).eval()
    assert model.channels == inputs
    save_checkpoint(tmp_path / "m.pt", model, config, {"horizon_min": 5.0})
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ModelConfig.from_dict(ckpt["config"]).views == views and loaded.channels == inputs
    x = torch.randn(2, len(inputs), 512) + 80
    x[:, -len(TREND_INPUTS):, :300] = float("nan")   # the trend view's bins before the case began
    ctx = torch.randn(2, len(model.context))
    with torch.no_grad():
        out = loaded(x, ctx)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, model(x, ctx))
        # an unobserved bin's value never matters: it is the series' observed mean, masked out of RevIN
        y = x.clone()
        y[:, -len(TREND_INPUTS):, :300] = 1e4
        assert not torch.allclose(model(y, ctx), out)   # (a finite value is observed: it does matter)


def test_the_trend_view_needs_revin_scaling():
    model = {"weights_dir": "w", "input_channels": ["abp"], "level_features": True, "input_scaling": "train_zscore",
             "context_length": 512, "views": ["trend"]}
    with pytest.raises(PipelineError, match="needs model.input_scaling=revin"):
        Model.from_params({"model": model})
    with pytest.raises(PipelineError, match=r"model\.views"):
        Model.from_params({"model": {**model, "input_scaling": "revin", "views": ["waveform", "spectrum"]}})
