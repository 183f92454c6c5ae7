"""What lib runs on that spans several params.yaml sections, each built in one place from the
section dataclasses of lib.core.params (which alone read and validate params.yaml's keys).

* `ModelConfig`: everything `lib.model.ttm.build_model` needs; saved in the checkpoint, which
  rebuilds the model from it (nanoGPT's GPTConfig).
* `LoopConfig`: one training loop's knobs (lib.model.loop.train_model), for the model (train.*) and
  for the CNN baseline (baselines.cnn_* with train's optimiser keys).
* `TrainConfig`: the train stage's and each CV fold's train and finetune sections with their loop.
* `EmbeddingConfig`: what the frozen backbone's embeddings depend on (the embed stage's cache key).
* `BaselinesConfig`, `ForecastFinetune`: what the baselines stage trains.
"""
from dataclasses import asdict, dataclass

from lib.core.params import (
    SCHEDULES,
    Baselines,
    Finetune,
    Head,
    Lora,
    Model,
    Train,
    Trend,
    check_task_inputs,
    fail,
    one_of,
    training_mode,
)


@dataclass(frozen=True)
class ModelConfig:
    """Everything `lib.model.ttm.build_model` needs; saved in the checkpoint, which rebuilds it."""

    weights_dir: str
    channels: tuple            # model.input_channels
    level_features: bool
    input_scaling: str
    context_length: int
    unfreeze_last_n_blocks: int
    lora: Lora | None          # the lora section when finetune.lora, else None
    hidden_dims: tuple         # head.hidden_dims (head.type mlp)
    dropout: float             # head.dropout (head.type mlp)
    task: str                  # train.task
    views: tuple = ("waveform",)   # what the backbone embeds: the waveform windows, the trend view, or both
    head_type: str = "linear"  # head.type
    activation: str = "gelu"   # head.activation (head.type mlp)

    @classmethod
    def from_params(cls, params) -> "ModelConfig":
        m, ft, head = Model.from_params(params), Finetune.from_params(params), Head.from_params(params)
        lora = Lora.from_params(params)   # read (and declared) whether or not finetune.lora switches it on
        return cls(weights_dir=m.weights_dir, channels=m.input_channels, level_features=m.level_features,
                   input_scaling=m.input_scaling, context_length=m.context_length,
                   unfreeze_last_n_blocks=ft.unfreeze_last_n_blocks,
                   lora=lora if ft.lora else None, hidden_dims=head.hidden_dims,
                   dropout=head.dropout, task=Train.pick(params, "task"), views=m.views, head_type=head.type,
                   activation=head.activation)

    def __post_init__(self):   # the sections' own checks, also for a config read back from a checkpoint
        for name, value in (("input_channels", self.channels), ("input_scaling", self.input_scaling),
                            ("context_length", self.context_length), ("views", self.views)):
            Model.check_value(name, value)
        check_task_inputs(Train.check_value("task", self.task), self.channels)
        Head.check_value("type", self.head_type)
        Head.check_value("activation", self.activation)

    @property
    def mode(self) -> str:
        return training_mode(self.unfreeze_last_n_blocks, self.lora is not None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d.setdefault("head_type", head_type_before_head_type(
            training_mode(d["unfreeze_last_n_blocks"], bool(d.get("lora")))))
        d["lora"] = Lora(**{**d["lora"], "target_modules": tuple(d["lora"]["target_modules"])}) \
            if d.get("lora") else None
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def head_type_before_head_type(mode: str) -> str:
    """The head of a checkpoint saved before head.type existed: fm mode had the linear head, ft mode
    the GELU MLP."""
    return "mlp" if mode == "ft" else "linear"


@dataclass(frozen=True)
class EmbeddingConfig:
    """What the frozen backbone's embeddings depend on (model.weights_dir, input_scaling,
    context_length, views): the embed stage's cache key."""

    weights_dir: str
    input_scaling: str
    context_length: int
    views: tuple = ("waveform",)   # the cache holds these views' inputs only (every waveform channel per view)

    @classmethod
    def from_params(cls, params) -> "EmbeddingConfig":
        return cls(*Model.pick(params, "weights_dir", "input_scaling", "context_length", "views"))

    def cache_key(self) -> dict:
        return {"input_scaling": self.input_scaling, "context_length": self.context_length}


@dataclass(frozen=True)
class LoopConfig:
    """One training loop's knobs (lib.model.loop.train_model)."""

    epochs: int
    batch_size: int
    grad_accum_steps: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    schedule: str = "cosine"
    warmup_frac: float = 0.05
    early_stopping_patience: int = 0
    monitor: str = "val_auroc"
    amp: str = "auto"
    windows_per_epoch: int = 0   # 0 = all; with cached embeddings always all
    val_windows_per_epoch: int = 0   # val windows each epoch's early-stopping record scores (one seeded draw); 0 = all
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"train.{name}", value, "must be an integer >= 1")
        one_of(*SCHEDULES)("train.schedule", self.schedule)
        one_of("auto", "off")("train.amp", self.amp)


@dataclass(frozen=True)
class TrainConfig:
    """The train stage (and each CV fold): the train and finetune sections, and the loop they make."""

    train: Train
    finetune: Finetune

    @classmethod
    def from_params(cls, params) -> "TrainConfig":
        return cls(Train.from_params(params), Finetune.from_params(params))

    @property
    def loop(self) -> LoopConfig:
        t = self.train
        return LoopConfig(epochs=t.epochs, batch_size=t.batch_size, grad_accum_steps=t.grad_accum_steps, lr=t.lr,
                          weight_decay=t.weight_decay, grad_clip=t.grad_clip, schedule=t.schedule,
                          warmup_frac=t.warmup_frac, early_stopping_patience=t.early_stopping_patience,
                          monitor=t.monitored, amp=t.amp, windows_per_epoch=self.finetune.windows_per_epoch,
                          val_windows_per_epoch=self.finetune.val_windows_per_epoch, seed=t.seed)


@dataclass(frozen=True)
class ForecastFinetune:
    """trend.finetune*: fine-tune the MAP forecaster (lib.model.forecast.finetune_forecaster) as the
    extra scorer `ttm_finetuned`; off = zero-shot only."""

    enabled: bool = False
    windows: int = 4096       # trend.finetune_windows: train windows drawn once; val: a quarter as many
    epochs: int = 10
    lr: float = 1e-3
    patience: int = 3

    @classmethod
    def from_params(cls, params) -> "ForecastFinetune":
        return cls(*Trend.pick(params, "finetune", "finetune_windows", "finetune_epochs", "finetune_lr",
                               "finetune_patience"))


@dataclass(frozen=True)
class BaselinesConfig:
    """The baselines stage: the baselines section, the task/horizon/channels they are trained for, and
    the CNN's loop (baselines.cnn_* with train's optimiser keys)."""

    task: str
    horizon_min: float
    channels: tuple
    cnn_loop: LoopConfig
    device: str
    weights_dir: str = "models/ttm-r2-512-96"   # the zero-shot forecaster's TTM (model.weights_dir)
    trend_step_s: int = 10                      # trend.step_s: seconds per bin of the stored trend view
    forecast_softness_mmhg: float = 2.0
    forecast_finetune: ForecastFinetune = ForecastFinetune()

    @classmethod
    def from_params(cls, params) -> "BaselinesConfig":
        b = Baselines.from_params(params)
        task, horizon, seed, weight_decay, grad_clip, warmup_frac, amp, device = Train.pick(
            params, "task", "horizon_min", "seed", "weight_decay", "grad_clip", "warmup_frac", "amp", "device")
        loop = LoopConfig(epochs=b.cnn_epochs, batch_size=b.cnn_batch_size, grad_accum_steps=1, lr=b.cnn_lr,
                          weight_decay=weight_decay, grad_clip=grad_clip, schedule="cosine", warmup_frac=warmup_frac,
                          early_stopping_patience=b.cnn_early_stopping_patience, monitor="val_auroc", amp=amp,
                          windows_per_epoch=b.cnn_windows_per_epoch,
                          val_windows_per_epoch=b.cnn_val_windows_per_epoch, seed=seed)
        channels, weights_dir = Model.pick(params, "input_channels", "weights_dir")
        return cls(task=task, horizon_min=horizon, channels=channels, cnn_loop=loop, device=device,
                   weights_dir=weights_dir, trend_step_s=Trend.pick(params, "step_s"),
                   forecast_softness_mmhg=b.forecast_softness_mmhg,
                   forecast_finetune=ForecastFinetune.from_params(params))
