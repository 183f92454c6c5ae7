"""TTM r2 backbone + hypotension head (nanoGPT-style: one model module, plain arguments).

Features per window: the backbone's `last_hidden_state` (batch, channels, patches, d_model)
mean-pooled over patches, plus its RevIN statistics `loc` and log `scale` per channel. TTM
normalises every window by its own mean and scale, which removes the absolute pressure level
that hypotension is defined by; handing `loc`/`scale` to the head gives that level back.
"""
import io
import json
from pathlib import Path

import torch
from torch import nn

from lib.errors import PipelineError

WEIGHT_FILES = ("config.json", "model.safetensors")


def load_ttm(weights_dir, revin: bool = True):
    """Load TinyTimeMixerForPrediction from a local directory; never falls back to anything else.

    `revin=False` turns TTM's per-window scaling off (config `scaling=None`), for inputs that are
    already standardised with the train split's statistics.
    """
    from tsfm_public.models.tinytimemixer import TinyTimeMixerForPrediction

    weights_dir = Path(weights_dir)
    missing = [f for f in WEIGHT_FILES if not (weights_dir / f).is_file()]
    if missing:
        raise PipelineError(f"model.weights_dir={weights_dir}: TTM weights missing ({', '.join(missing)}); "
                            "restore the shipped folder with git checkout")
    try:
        json.loads((weights_dir / "config.json").read_text())
        overrides = {} if revin else {"scaling": None}
        model = TinyTimeMixerForPrediction.from_pretrained(str(weights_dir), **overrides)
    except Exception as err:
        raise PipelineError(f"model.weights_dir={weights_dir}: TTM weights could not be loaded "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    return model


def linear_module_names(module: nn.Module) -> set:
    """Short names of the Linear layers in `module` (what LoRA can target)."""
    return {name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def add_lora(backbone: nn.Module, r: int, alpha: int, dropout: float, target_modules):
    """Wrap the backbone with peft LoRA adapters on TTM's real Linear layers; base weights frozen."""
    from peft import LoraConfig, get_peft_model

    available = linear_module_names(backbone)
    unknown = [t for t in target_modules if t not in available]
    if unknown:
        raise PipelineError(f"finetune.target_modules: {', '.join(unknown)} match no Linear layer of TTM "
                            f"(available: {', '.join(sorted(available))})")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))
    return get_peft_model(backbone, config)


INPUT_SCALINGS = ("revin", "train_zscore")


class HypotensionModel(nn.Module):
    """(Input z-score) → backbone features (+ level features) → standardisation → linear head → one logit.

    `input_scaling="revin"`: windows go to TTM as they are and TTM scales each by its own mean/std.
    `"train_zscore"`: every channel is standardised with the train split's statistics (set by
    `set_input_stats`) and TTM's scaling is off, so the absolute level reaches the backbone.
    """

    def __init__(self, backbone: nn.Module, n_channels: int, d_model: int, level_features: bool = True,
                 input_scaling: str = "revin"):
        super().__init__()
        self.backbone = backbone
        self.level_features = level_features
        self.input_scaling = input_scaling
        self.register_buffer("input_mean", torch.zeros(n_channels))
        self.register_buffer("input_std", torch.ones(n_channels))
        n_features = n_channels * d_model + (2 * n_channels if level_features else 0)
        # Feature standardisation, fitted on the train split's features (see training.fit_scaler).
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.head = nn.Linear(n_features, 1)

    def set_input_stats(self, stats: dict) -> None:
        """Per-channel mean/std of the train split (the windows stage's `normalisation` attribute)."""
        if stats.get("fitted_on") != "train":
            raise PipelineError("input normalisation statistics must come from the train split")
        self.input_mean.copy_(torch.tensor(stats["mean"], dtype=torch.float32))
        self.input_std.copy_(torch.tensor(stats["std"], dtype=torch.float32).clamp_min(1e-6))

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """windows (batch, channels, length) → raw features (batch, n_features)."""
        if self.input_scaling == "train_zscore":
            windows = (windows - self.input_mean[:, None]) / self.input_std[:, None]
        out = self.backbone(past_values=windows.transpose(1, 2))
        pooled = out.last_hidden_state.mean(dim=2).flatten(1)
        if not self.level_features:
            return pooled
        loc = out.loc.squeeze(1)
        log_scale = torch.log(out.scale.squeeze(1).clamp_min(1e-6))
        return torch.cat([pooled, loc, log_scale], dim=1)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features - self.feature_mean) / self.feature_std).squeeze(-1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(windows))


def build_model(weights_dir, n_channels: int, level_features: bool, lora: dict | None, input_scaling: str = "revin"):
    """The model as configured; `lora` is None (frozen backbone) or {r, alpha, dropout, target_modules}."""
    if input_scaling not in INPUT_SCALINGS:
        raise PipelineError(f"model.input_scaling={input_scaling!r}: expected one of {', '.join(INPUT_SCALINGS)}")
    ttm = load_ttm(weights_dir, revin=input_scaling == "revin")
    backbone = ttm.backbone
    for p in backbone.parameters():
        p.requires_grad_(False)
    if lora:
        backbone = add_lora(backbone, lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"])
    return HypotensionModel(backbone, n_channels, ttm.config.d_model, level_features, input_scaling)


def trainable_parameters(model: nn.Module) -> dict:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path, model: HypotensionModel, config: dict, extra: dict) -> None:
    """One dict: config to rebuild the model, the trained tensors (head, scaler, LoRA), extras."""
    from lib.atomic import atomic_path

    state = {k: v for k, v in model.state_dict().items()
             if k.startswith(("head.", "feature_", "input_")) or "lora_" in k}
    buffer = io.BytesIO()  # torch.save names its zip records after the file: save via memory, not the temp name
    torch.save({"config": config, "state": state, **extra}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(path, device="cpu"):
    """Rebuild the trained model from a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} not found: run the train stage first (dvc repro train)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        config = ckpt["config"]
    except Exception as err:
        raise PipelineError(f"checkpoint {path} is corrupt ({type(err).__name__}); rerun dvc repro -f train") from err
    model = build_model(**config)
    missing = [k for k in ckpt["state"] if k not in model.state_dict()]
    if missing:
        raise PipelineError(f"checkpoint {path} does not match the model ({missing[0]} …); rerun dvc repro -f train")
    model.load_state_dict(ckpt["state"], strict=False)
    return model.to(device).eval(), ckpt
