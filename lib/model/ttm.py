"""TTM r2 backbone + hypotension head (nanoGPT-style: one model module, built from a ModelConfig).

Per channel, the backbone gives an *embedding*: its `last_hidden_state` (patches × d_model)
mean-pooled over patches, followed by its RevIN statistics `loc` and log `scale`. TTM is
channel-independent, so one channel's embedding does not depend on the others. The model's
`forward(windows, context)` is `head_forward(embed(windows), context)`; `head_forward` alone runs
on cached embeddings.

Modes (chosen by `finetune` params, see `Finetune.mode`):
* fm  – foundation-model mode: backbone frozen, linear head; embeddings are cached (embed stage).
* ft  – the last `unfreeze_last_n_blocks` of TTM's six mixer layers train, optionally with LoRA
        adapters (peft) on the Linear layers of the frozen ones; MLP head.

Level-aware head (`level_features`): TTM's per-window scaling removes the absolute pressure level
that hypotension is defined by. With level features on, the head also sees each channel's `loc` /
log `scale` and the window's past-only context features (current MAP, MAP trend, HR, pulse
pressure). All head inputs are standardised with the train split's statistics; a missing context
value (MAP trend in a case's first minute) becomes 0 after standardisation, i.e. it is imputed
with the train mean.
"""
import io
import json
from pathlib import Path

import torch
from torch import nn

from lib.core.config import EmbeddingConfig, ModelConfig
from lib.core.errors import PipelineError
from lib.core.params import TTM_CONTEXT, Inference, Lora
from lib.core.schema import CHANNELS, CONTEXT_SOURCES, REG_TARGETS, TREND_INPUTS
from lib.model import engines

WEIGHT_FILES = ("config.json", "model.safetensors")


def load_ttm(weights_dir, revin: bool = True):
    """Load TinyTimeMixerForPrediction from a local directory; never falls back to anything else.

    `revin=False` turns TTM's per-window scaling off (config `scaling=None`), for inputs that are
    already standardised with the train split's statistics.
    """
    from transformers import PreTrainedModel
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
    # transformers looks a model's loss up by its class name (PreTrainedModel.loss_function, warning
    # "`loss_type=None` was set in the config but it is unrecognized" when that fails). TTM's classes
    # have no entry there: TTM computes its own loss, and this project its own. Saying so (no
    # transformers loss) keeps TorchScript tracing, which reads every attribute of every submodule
    # (freeze_for_inference), from running that lookup on TTM's PreTrainedModel parts.
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.loss_function = None
    return model


def fit_context(x: torch.Tensor, context_length: int):
    """(batch, length, channels) → TTM's (batch, 512, channels) input and its `past_observed_mask`.

    The model sees the last `context_length` samples. A shorter context is left-padded with zeros
    to the weights' 512, as granite-tsfm does for series shorter than a TTM's context (its datasets'
    zero padding, `get_model(..., force_return="zeropad")`), and the padding is marked unobserved
    in `past_observed_mask` so RevIN's loc/scale come from the real samples only. A masked channel
    or an unobserved trend bin (NaN) is unobserved in the same way.
    """
    if not 0 < context_length <= min(TTM_CONTEXT, x.shape[1]):
        raise PipelineError(f"model.context_length={context_length}: must be 1-{min(TTM_CONTEXT, x.shape[1])} "
                            f"(windows are {x.shape[1]} samples, TTM's context is {TTM_CONTEXT})")
    x = x[:, -context_length:]
    # NaN is unobserved: a channel its quality gates masked, a trend bin without data. Its value is the
    # series' observed mean (0 after TTM's RevIN scaling, a neutral pre-history), since the mask keeps
    # it out of RevIN's statistics but not out of the mixer; a series with no observed sample reads 0.
    finite = torch.isfinite(x)
    observed = finite.to(x.dtype)
    mean = torch.where(finite, x, 0).sum(1, keepdim=True) / observed.sum(1, keepdim=True).clamp_min(1)
    x = torch.where(finite, x, mean)
    pad = TTM_CONTEXT - context_length
    if pad:
        zeros = x.new_zeros(x.shape[0], pad, x.shape[2])
        x, observed = torch.cat([zeros, x], dim=1), torch.cat([zeros, observed], dim=1)
    return x, observed


def mixer_layer_names(backbone: nn.Module) -> list:
    """Module names of TTM's mixer layers in forward order (r2 512-96: 3 patching levels × 2 = 6)."""
    return [name for name, m in backbone.named_modules() if type(m).__name__ == "TinyTimeMixerLayer"]


def configure_backbone(backbone: nn.Module, unfreeze_last_n_blocks: int, lora: Lora | None) -> nn.Module:
    """Freeze TTM, add LoRA adapters to the frozen mixer layers' target Linears, unfreeze the last n layers."""
    layers = mixer_layer_names(backbone)
    if not 0 <= unfreeze_last_n_blocks <= len(layers):
        raise PipelineError(f"finetune.unfreeze_last_n_blocks={unfreeze_last_n_blocks}: TTM has "
                            f"{len(layers)} mixer blocks (use 0-{len(layers)})")
    for p in backbone.parameters():
        p.requires_grad_(False)
    unfrozen = layers[len(layers) - unfreeze_last_n_blocks:]
    if lora:
        backbone = add_lora(backbone, lora, exclude=unfrozen)
        unfrozen = [f"base_model.model.{name}" for name in unfrozen]
    modules = dict(backbone.named_modules())
    for name in unfrozen:
        for p in modules[name].parameters():
            p.requires_grad_(True)
    return backbone


def add_lora(backbone: nn.Module, lora: Lora, exclude=()):
    """Wrap the backbone with peft LoRA adapters on TTM's Linear layers named in `lora.target_modules`.

    Layers under `exclude` (the fully unfrozen blocks) get no adapter. Base weights stay frozen.
    """
    import peft

    target_modules = lora.target_modules
    linears = [name for name, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    available = {name.rsplit(".", 1)[-1] for name in linears}
    unknown = [t for t in target_modules if t not in available]
    if unknown or not target_modules:
        raise PipelineError(f"lora.target_modules: {', '.join(unknown) or '(empty)'} match no Linear layer of "
                            f"TTM (available: {', '.join(sorted(available))})")
    targets = [name for name in linears if name.rsplit(".", 1)[-1] in target_modules
               and not any(name.startswith(prefix + ".") for prefix in exclude)]
    if not targets:
        raise PipelineError(f"lora.target_modules: every {'/'.join(target_modules)} layer is in the unfrozen "
                            "blocks; lower finetune.unfreeze_last_n_blocks or turn finetune.lora off")
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)
    return peft.get_peft_model(backbone, config)


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}   # head.activation


def make_head(n_features: int, hidden_dims, dropout: float, n_outputs: int, activation: str = "gelu") -> nn.Module:
    """Linear (no hidden dims) or MLP: [Linear → activation → Dropout] per hidden dim, then Linear."""
    layers, width = [], n_features
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_outputs))


class HypotensionModel(nn.Module):
    """(Input z-score) → TTM embeddings (+ level features) → standardisation → head.

    `input_scaling="revin"`: windows go to TTM as they are and TTM scales each by its own mean/std.
    `"train_zscore"`: every channel is standardised with the train split's statistics (set by
    `set_input_stats`) and TTM's scaling is off, so the absolute level reaches the backbone.
    Outputs: one logit (task clf) or the standardised SBP/DBP/MAP (task reg; `to_mmhg` undoes it).
    """

    def __init__(self, backbone: nn.Module, channels, d_model: int, *, level_features: bool = True,
                 context=(), input_scaling: str = "revin", hidden_dims=(), dropout: float = 0.0,
                 activation: str = "gelu", task: str = "clf", context_length: int = TTM_CONTEXT):
        super().__init__()
        self.backbone = backbone
        self.channels, self.context, self.d_model = list(channels), list(context), d_model
        self.level_features, self.input_scaling, self.task = level_features, input_scaling, task
        self.context_length = context_length
        self._frozen_backbone = None   # freeze_for_inference
        self.inference_engine = engines.EAGER
        n_channels = len(self.channels)
        self.register_buffer("input_mean", torch.zeros(n_channels))
        self.register_buffer("input_std", torch.ones(n_channels))
        per_channel = d_model + (2 if level_features else 0)
        n_features = n_channels * per_channel + len(self.context)
        # Head-input standardisation, fitted on the train split (lib.model.training.fit_scalers).
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        n_outputs = 1 if task == "clf" else len(REG_TARGETS)
        self.register_buffer("target_mean", torch.zeros(n_outputs))
        self.register_buffer("target_std", torch.ones(n_outputs))
        self.head = make_head(n_features, hidden_dims, dropout, n_outputs, activation)

    def set_input_stats(self, stats: dict) -> None:
        set_input_stats(self, stats)

    def _backbone_outputs(self, x: torch.Tensor, observed: torch.Tensor):
        if self._frozen_backbone is not None:
            return self._frozen_backbone(x, observed)
        out = self.backbone(past_values=x, past_observed_mask=observed)
        return out.last_hidden_state, out.loc, out.scale

    def freeze_for_inference(self, engine: str = "torchscript", bf16: bool = False) -> "HypotensionModel":
        """Run the backbone with an inference engine for fixed weights (params.yaml `inference`, one of
        lib.model.engines; `"eager"` without bf16 undoes it). Training refuses a model frozen so."""
        self.eval()
        frozen = engines.freeze_backbone(self.backbone, len(self.channels), self.input_mean.device, engine, bf16)
        # Kept off the module tree, so it never enters a state_dict or a checkpoint.
        object.__setattr__(self, "_frozen_backbone", frozen)
        self.inference_engine = engines.EAGER if frozen is None else engines.engine_label(engine, bf16)
        return self

    def embed(self, windows: torch.Tensor) -> torch.Tensor:
        """windows (batch, channels, length) → embeddings (batch, channels, d_model + 2)."""
        if self.input_scaling == "train_zscore":
            windows = (windows - self.input_mean[:, None]) / self.input_std[:, None]
        x, observed = fit_context(windows.transpose(1, 2), self.context_length)
        step = engines.call_batch(self._frozen_backbone, len(x))
        if not torch.is_grad_enabled() and len(x) > step:
            parts = [self._backbone_outputs(x[i:i + step], observed[i:i + step]) for i in range(0, len(x), step)]
            hidden, loc, scale = (torch.cat(t) for t in zip(*parts))
        else:
            hidden, loc, scale = self._backbone_outputs(x, observed)
        pooled = hidden.mean(dim=2)
        log_scale = torch.log(scale.transpose(1, 2).clamp_min(1e-6))
        return torch.cat([pooled, loc.transpose(1, 2), log_scale], dim=2)

    def head_features(self, embeddings: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Raw head inputs: embeddings (with or without loc/scale), then the context features."""
        if not self.level_features:
            return embeddings[..., :self.d_model].flatten(1)
        return torch.cat([embeddings.flatten(1), context], dim=1)

    def forward(self, windows: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """windows (batch, channels, length) and their context features → outputs."""
        return self.head_forward(self.embed(windows), context)

    def head_forward(self, embeddings: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The head alone, on embeddings (`embed`'s, or the embed stage's cache while the backbone is frozen)."""
        z = (self.head_features(embeddings, context) - self.feature_mean) / self.feature_std
        out = self.head(torch.nan_to_num(z, nan=0.0))  # missing context → train mean
        return out.squeeze(-1) if self.task == "clf" else out

    def to_mmhg(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs * self.target_std + self.target_mean


def set_input_stats(model: nn.Module, stats: dict) -> None:
    """Copy the train split's per-channel mean/std (the windows stage's `normalisation` attribute)
    into `model.input_mean` / `model.input_std` for the model's `channels`."""
    if stats.get("fitted_on") != "train":
        raise PipelineError("input normalisation statistics must come from the train split")
    known = list(stats["channels"])   # the waveform channels; trend inputs (RevIN only) keep mean 0, std 1
    mean = [stats["mean"][known.index(c)] if c in known else 0.0 for c in model.channels]
    std = [stats["std"][known.index(c)] if c in known else 1.0 for c in model.channels]
    model.input_mean.copy_(torch.tensor(mean, dtype=torch.float32))
    model.input_std.copy_(torch.tensor(std, dtype=torch.float32).clamp_min(1e-6))


def context_features(channels, level_features: bool) -> list:
    """Context features the head gets: those measured on an input channel (none without level features)."""
    return [name for name, source in CONTEXT_SOURCES.items() if level_features and source in channels]


def model_inputs(cfg: ModelConfig) -> list:
    """The series the backbone embeds, in INPUTS order: the waveform channels and/or the trend series."""
    return [*(cfg.channels if "waveform" in cfg.views else ()), *(TREND_INPUTS if "trend" in cfg.views else ())]


def build_model(cfg: ModelConfig) -> HypotensionModel:
    """The model as configured (the checkpoint's `config` holds `cfg.to_dict()`).

    The head is linear, or with head.type mlp the MLP of `cfg.hidden_dims`, in either mode.
    """
    channels, input_scaling, context_length, task = cfg.channels, cfg.input_scaling, cfg.context_length, cfg.task
    ttm = load_ttm(cfg.weights_dir, revin=input_scaling == "revin")
    backbone = configure_backbone(ttm.backbone, cfg.unfreeze_last_n_blocks, cfg.lora)
    return HypotensionModel(backbone, model_inputs(cfg), ttm.config.d_model, level_features=cfg.level_features,
                            context=context_features(channels, cfg.level_features), input_scaling=input_scaling,
                            hidden_dims=cfg.hidden_dims if cfg.head_type == "mlp" else (), dropout=cfg.dropout,
                            activation=cfg.activation, task=task, context_length=context_length)


def embedding_model(cfg: EmbeddingConfig) -> HypotensionModel:
    """The frozen backbone on the inputs of `cfg.views`, as the embed stage runs it (only `embed` is
    used): every waveform channel (any `model.input_channels` trains from the same cache) and/or the
    trend series."""
    views = cfg.views
    return build_model(ModelConfig(weights_dir=cfg.weights_dir, channels=CHANNELS, level_features=True,
                                   input_scaling=cfg.input_scaling, context_length=cfg.context_length,
                                   unfreeze_last_n_blocks=0, lora=None, hidden_dims=(), dropout=0.0, task="clf",
                                   views=views))


def trainable_parameters(model: nn.Module) -> dict:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def trained_state(model: nn.Module) -> dict:
    """What training changed: trainable tensors (head, LoRA, unfrozen blocks) and the fitted buffers."""
    trainable = trainable_parameters(model)
    own_buffers = {name for name, _ in model.named_buffers() if not name.startswith("backbone.")}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in own_buffers}


def save_torch(path, obj) -> None:
    """torch.save, atomically and byte-reproducibly (torch.save names its zip records after the
    file it writes, so it writes to memory rather than to the temporary name)."""
    from lib.core.atomic import atomic_path

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def save_checkpoint(path, model: HypotensionModel, cfg: ModelConfig, extra: dict) -> None:
    """One dict: the config that rebuilds the model (`cfg.to_dict()`), the trained tensors, extras."""
    save_torch(path, {"config": cfg.to_dict(), "state": trained_state(model), **extra})


def load_checkpoint(path, device="cpu", inference: Inference | None = None):
    """Rebuild the trained model from a checkpoint written by `save_checkpoint`, frozen for inference
    as `inference` (params.yaml `inference`) says."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} not found: run the train stage first (dvc repro train)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        cfg, state = ModelConfig.from_dict(ckpt["config"]), ckpt["state"]
    except Exception as err:
        raise PipelineError(f"checkpoint {path} is corrupt ({type(err).__name__}); rerun dvc repro -f train") from err
    model = build_model(cfg)
    mismatch = sorted(set(state) ^ set(trained_state(model)))
    if not mismatch:
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # same names, other shapes
            mismatch = [str(err).splitlines()[-1].strip()[:160]]
    if mismatch:
        raise PipelineError(f"checkpoint {path} does not match the model ({mismatch[0]} …); rerun dvc repro -f train")
    inference = inference or Inference()
    return model.to(device).eval().freeze_for_inference(inference.engine, inference.bf16), ckpt
