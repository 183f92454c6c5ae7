"""params.yaml, read once per stage and validated into frozen dataclasses (nanoGPT's GPTConfig).

A stage's `config(params)` builds the dataclasses it needs from the raw mapping that `read_params`
returns; `lib` only ever sees these objects, never params.yaml or a section dict. Every error is
one line naming the key. The keys a stage reads are exactly its `params:` in dvc.yaml: the graph
test (tests/test_dvc_graph.py) records them by running each stage's `config` and compares.

Keys whose value cannot change any output (process counts, download retries) are read
but are not DVC dependencies: they are listed in NOT_DEPENDENCIES.
"""
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from lib.core.errors import PipelineError

# Read, but never a DVC dependency: outputs are identical for any value (tested for workers).
NOT_DEPENDENCIES = ("data.workers", "data.download", "windows.workers")
SOURCES = ("demo", "local", "vitaldb")
TASKS = ("clf", "reg")
SCHEDULES = ("cosine", "onecycle")
INPUT_SCALINGS = ("revin", "train_zscore")
CALIBRATION_METHODS = ("temperature", "platt", "isotonic")
THRESHOLD_RULES = ("youden", "sensitivity")
VOTING = ("soft", "hard", "none")
VIEWS = ("waveform", "trend")   # model.views: what the backbone embeds (lib.core.schema.INPUTS)
TTM_CONTEXT = 512   # the r2 512-96 weights' context length


def read_params(path="params.yaml") -> dict:
    """The whole params.yaml as a mapping; one line when it is missing or not YAML."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"{path}: cannot read params ({err})") from err
    if not isinstance(params, dict):
        raise PipelineError(f"{path}: expected a mapping of sections")
    return params


def section(params, name: str, keys, label: str = "") -> dict:
    """`params[name]` checked to hold exactly `keys` (a missing key or a typo is one line naming
    `label`, the dotted path, by default `name`). Only key names are looked at here."""
    name_in_file = label or name
    if name not in params:
        raise PipelineError(f"params.yaml: section {name_in_file} is missing")
    values = params[name]
    if not hasattr(values, "keys"):
        raise PipelineError(f"params.yaml: {name_in_file} must be a mapping")
    missing = [k for k in keys if k not in values]
    unknown = [k for k in values if k not in keys]
    if missing:
        raise PipelineError(f"params.yaml: {name_in_file}.{missing[0]} is missing")
    if unknown:
        raise PipelineError(f"params.yaml: unknown key {name_in_file}.{unknown[0]} (known: {', '.join(keys)})")
    return values


def _names(cls) -> list:
    return [f.name for f in fields(cls)]


def _fail(key: str, value, expected: str):
    raise PipelineError(f"params.yaml: {key}={value!r}: {expected}")


def _one_of(key: str, value, choices):
    if value not in choices:
        _fail(key, value, f"expected one of {', '.join(choices)}")
    return value


def _positive_int(key: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum}")
    return value


def _interval(key: str, value) -> tuple:
    if not isinstance(value, list | tuple) or len(value) != 2 or not value[0] < value[1]:
        _fail(key, value, "must be [low, high] with low < high")
    return (float(value[0]), float(value[1]))


# --- data and cohort -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Criteria:
    """Which VitalDB cases are eligible (data.select)."""

    min_age: float = 18
    ane_types: tuple = ("General",)
    aline_sites: tuple = ("radial",)   # substrings of `aline1`, case-insensitive; () = any arterial line
    min_case_minutes: float = 30
    seed: int = 0                      # which subjects data.max_cases draws


@dataclass(frozen=True)
class DataConfig:
    source: str
    clinical_csv: str
    vital_dir: str
    cache_dir: str
    max_cases: int
    select: Criteria
    retries: int
    backoff_s: float
    tracks: dict         # channel -> tuple of track names, first present wins
    workers: int
    download_workers: int   # data.download.workers: concurrent case downloads (threads)

    KEYS = ("source", "clinical_csv", "vital_dir", "cache_dir", "max_cases", "select", "download", "tracks",
            "workers")

    @classmethod
    def from_params(cls, params) -> "DataConfig":
        d = section(params, "data", cls.KEYS)
        s = section(d, "select", _names(Criteria), "data.select")
        download = section(d, "download", ("retries", "backoff_s", "workers"), "data.download")
        return cls(source=_one_of("data.source", d["source"], SOURCES), clinical_csv=str(d["clinical_csv"]),
                   vital_dir=str(d["vital_dir"]), cache_dir=str(d["cache_dir"]),
                   max_cases=_positive_int("data.max_cases", d["max_cases"], 0),
                   select=Criteria(min_age=float(s["min_age"]), ane_types=tuple(s["ane_types"]),
                                   aline_sites=tuple(s["aline_sites"]),
                                   min_case_minutes=float(s["min_case_minutes"]), seed=int(s["seed"])),
                   retries=_positive_int("data.download.retries", download["retries"], 0),
                   backoff_s=float(download["backoff_s"]), tracks=track_aliases(d["tracks"]),
                   workers=_positive_int("data.workers", d["workers"]),
                   download_workers=_positive_int("data.download.workers", download["workers"]))


def track_aliases(tracks) -> dict:
    """data.tracks ({channel: name or [names]}) as {channel: (names, ...)}, validated."""
    aliases = {}
    for channel, names in tracks.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) and n for n in names):
            _fail(f"data.tracks.{channel}", names, "expected a track name or a list of alternative names "
                  "(e.g. [SNUADC/ART, Intellivue/ABP])")
        aliases[str(channel)] = tuple(names)
    return aliases


@dataclass(frozen=True)
class DemoConfig:
    """The simulated demo cohort (source=demo)."""

    n_cases: int
    n_multi_case_subjects: int
    srate: float
    min_minutes: float
    max_minutes: float
    ioh_fraction: float
    seed: int

    @classmethod
    def from_params(cls, params) -> "DemoConfig":
        d = section(params, "demo", _names(cls))
        cfg = cls(n_cases=_positive_int("demo.n_cases", d["n_cases"]),
                  n_multi_case_subjects=_positive_int("demo.n_multi_case_subjects", d["n_multi_case_subjects"], 0),
                  srate=float(d["srate"]), min_minutes=float(d["min_minutes"]), max_minutes=float(d["max_minutes"]),
                  ioh_fraction=float(d["ioh_fraction"]), seed=int(d["seed"]))
        if not 0 < cfg.min_minutes <= cfg.max_minutes:
            _fail("demo.min_minutes", cfg.min_minutes, f"must be > 0 and <= demo.max_minutes={cfg.max_minutes:g}")
        if not 0 <= cfg.ioh_fraction <= 1:
            _fail("demo.ioh_fraction", cfg.ioh_fraction, "must be in [0, 1]")
        return cfg


@dataclass(frozen=True)
class SplitsConfig:
    ratios: dict          # {train, val, test: share}, >= 0, summing to 1
    seed: int
    max_cases: dict | None   # fasttrack: {split: case cap}, None when fasttrack is off

    KEYS = ("train", "val", "test", "seed", "fasttrack", "fasttrack_max_cases")

    @classmethod
    def from_params(cls, params) -> "SplitsConfig":
        s = section(params, "splits", cls.KEYS)
        ratios = {name: float(s[name]) for name in ("train", "val", "test")}
        if any(r < 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1) > 1e-6:
            raise PipelineError(f"splits.train/val/test must be >= 0 and sum to 1 (got {ratios})")
        caps = {str(k): int(v) for k, v in s["fasttrack_max_cases"].items()}
        return cls(ratios=ratios, seed=int(s["seed"]), max_cases=caps if s["fasttrack"] else None)


# --- windows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QualityLimits:
    """Window quality gates' limits (lib.signal.quality)."""

    ecg_sqi_min: float = 0.9
    ppg_ssqi_min: float = 0.8
    min_beats: int = 3
    map_range: tuple = (20.0, 200.0)
    pp_range: tuple = (15.0, 150.0)


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut, filtered, gated and labelled (windows.*)."""

    fs: int = 125
    length: int = 512
    stride: int = 512
    horizons_min: tuple = (5.0, 10.0, 15.0)
    label_duration_s: int = 60
    map_threshold: float = 65.0
    label_min_valid: float = 0.8
    label_rule: str = "within"          # lib.signal.labels.RULES
    post_event_gap_min: float = 10.0    # rule 'within': no label this long after an event ends
    ppg_band: tuple = (0.4, 7.0)
    ecg_band: tuple = (0.5, 40.0)
    abp_lowpass_hz: float = 20.0
    slope_window_s: int = 300
    ringing_margin_s: float = 1.0
    limits: QualityLimits = field(default_factory=QualityLimits)
    trend: "TrendSpec" = None   # the trend view stored with each window (trend.*); None: TrendSpec()
    dtype: str = "float32"      # how the windows files store `signals` (float32 | float16); read back float32

    def __post_init__(self):
        if self.trend is None:
            object.__setattr__(self, "trend", TrendSpec())


@dataclass(frozen=True)
class TrendSpec:
    """The trend view (trend.*): past-only series of `step_s`-second bins over `context` bins per window."""

    step_s: int = 10
    context: int = 512

    KEYS = ("step_s", "context", "finetune", "finetune_windows", "finetune_epochs", "finetune_lr", "finetune_patience")

    @classmethod
    def from_params(cls, params) -> "TrendSpec":
        t = section(params, "trend", cls.KEYS)
        context = t["context"]
        if isinstance(context, bool) or not isinstance(context, int) or not 0 < context <= TTM_CONTEXT:
            raise PipelineError(f"params.yaml: trend.context={context!r}: must be an integer 1-{TTM_CONTEXT} "
                                "(TTM's context)")
        return cls(step_s=_positive_int("trend.step_s", t["step_s"]), context=context)


@dataclass(frozen=True)
class ForecastFinetune:
    """trend.finetune*: fine-tune the MAP forecaster (lib.model.forecast.finetune_forecaster) as the
    extra scorer `ttm_finetuned`; off = zero-shot only."""

    enabled: bool = False
    windows: int = 4096       # train windows drawn once (the few-shot pool); val: a quarter as many
    epochs: int = 10
    lr: float = 1e-3
    patience: int = 3

    @classmethod
    def from_params(cls, params) -> "ForecastFinetune":
        t = section(params, "trend", TrendSpec.KEYS)
        if not isinstance(t["finetune"], bool):
            _fail("trend.finetune", t["finetune"], "must be true or false")
        lr = float(t["finetune_lr"])
        if not lr > 0:
            _fail("trend.finetune_lr", t["finetune_lr"], "must be > 0")
        return cls(enabled=t["finetune"], windows=_positive_int("trend.finetune_windows", t["finetune_windows"], 64),
                   epochs=_positive_int("trend.finetune_epochs", t["finetune_epochs"]), lr=lr,
                   patience=_positive_int("trend.finetune_patience", t["finetune_patience"]))


@dataclass(frozen=True)
class WindowsConfig:
    spec: WindowSpec          # train and val windows
    test_spec: WindowSpec     # test windows: overlapping by evaluate.overlap, for voting
    workers: int

    KEYS = ("fs", "length", "stride", "horizons_min", "map_threshold", "label_min_valid", "label_rule",
            "post_event_gap_min", "ppg_band_hz",
            "ecg_band_hz", "abp_lowpass_hz", "ecg_sqi_min", "ppg_ssqi_min", "min_beats", "map_range",
            "pulse_pressure_range", "map_slope_window_s", "dtype", "workers")
    DTYPES = ("float32", "float16")   # = lib.data.windows_h5.DTYPES

    @classmethod
    def from_params(cls, params) -> "WindowsConfig":
        w = section(params, "windows", cls.KEYS)
        fs = _positive_int("windows.fs", w["fs"])
        length = w["length"]
        if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= TTM_CONTEXT:
            raise PipelineError(f"windows.length={length}: must be 1-{TTM_CONTEXT} (TTM's context length is "
                                f"{TTM_CONTEXT})")
        if isinstance(w["stride"], bool) or not isinstance(w["stride"], int) or w["stride"] <= 0:
            raise PipelineError(f"windows.stride={w['stride']}: must be > 0")
        horizons = w["horizons_min"]
        if not isinstance(horizons, list) or not horizons or any(h <= 0 for h in horizons):
            raise PipelineError(f"windows.horizons_min={horizons}: must be a non-empty list of minutes > 0")
        if w["label_rule"] not in ("within", "at"):
            raise PipelineError(f"windows.label_rule={w['label_rule']!r}: must be 'within' (an event begins within "
                                "the horizon) or 'at' (the minute at the horizon is hypotensive)")
        if not float(w["post_event_gap_min"]) >= 0:
            raise PipelineError(f"windows.post_event_gap_min={w['post_event_gap_min']}: must be >= 0")
        if w["dtype"] not in cls.DTYPES:
            raise PipelineError(f"params.yaml: windows.dtype={w['dtype']!r}: must be float32 or float16 "
                                "(how the windows files store the signals)")
        bands = {}
        for key in ("ppg_band_hz", "ecg_band_hz"):
            bands[key] = _interval(f"windows.{key}", w[key])
            if bands[key][0] <= 0 or bands[key][1] >= fs / 2:
                raise PipelineError(f"windows.{key}={w[key]}: must lie inside (0, fs/2 = {fs / 2:g}) Hz")
        limits = QualityLimits(ecg_sqi_min=float(w["ecg_sqi_min"]), ppg_ssqi_min=float(w["ppg_ssqi_min"]),
                               min_beats=int(w["min_beats"]), map_range=_interval("windows.map_range", w["map_range"]),
                               pp_range=_interval("windows.pulse_pressure_range", w["pulse_pressure_range"]))
        spec = WindowSpec(fs=fs, length=length, stride=w["stride"], horizons_min=tuple(float(h) for h in horizons),
                          map_threshold=float(w["map_threshold"]), label_min_valid=float(w["label_min_valid"]),
                          label_rule=str(w["label_rule"]), post_event_gap_min=float(w["post_event_gap_min"]),
                          ppg_band=tuple(w["ppg_band_hz"]), ecg_band=tuple(w["ecg_band_hz"]),
                          abp_lowpass_hz=float(w["abp_lowpass_hz"]), slope_window_s=int(w["map_slope_window_s"]),
                          limits=limits, trend=TrendSpec.from_params(params), dtype=w["dtype"])
        overlap = params["evaluate"]["overlap"]
        if not 0 <= overlap < 1:
            raise PipelineError(f"params.yaml: evaluate.overlap={overlap}: must be in [0, 1)")
        test_stride = max(1, round(length * (1 - overlap)))
        return cls(spec=spec, test_spec=replace(spec, stride=test_stride),
                   workers=_positive_int("windows.workers", w["workers"]))


# --- model and training -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple

    @classmethod
    def from_params(cls, params) -> "LoraConfig":
        s = section(params, "lora", _names(cls))
        return cls(r=_positive_int("lora.r", s["r"]), alpha=int(s["alpha"]), dropout=float(s["dropout"]),
                   target_modules=tuple(s["target_modules"]))


@dataclass(frozen=True)
class ModelConfig:
    """Everything `lib.model.ttm.build_model` needs; saved in the checkpoint, which rebuilds it."""

    weights_dir: str
    channels: tuple
    level_features: bool
    input_scaling: str
    context_length: int
    unfreeze_last_n_blocks: int
    lora: LoraConfig | None
    hidden_dims: tuple
    dropout: float
    task: str
    views: tuple = ("waveform",)   # what the backbone embeds: the waveform windows, the trend view, or both

    MODEL_KEYS = ("weights_dir", "input_channels", "level_features", "input_scaling", "context_length", "views")

    @classmethod
    def from_params(cls, params) -> "ModelConfig":
        m = section(params, "model", cls.MODEL_KEYS)
        ft = FinetuneConfig.from_params(params)
        h = section(params, "head", ("hidden_dims", "dropout"))
        lora = LoraConfig.from_params(params)
        return cls(weights_dir=str(m["weights_dir"]), channels=tuple(m["input_channels"]),
                   level_features=bool(m["level_features"]),
                   input_scaling=_one_of("model.input_scaling", m["input_scaling"], INPUT_SCALINGS),
                   context_length=_context_length(m["context_length"]),
                   unfreeze_last_n_blocks=ft.unfreeze_last_n_blocks, lora=lora if ft.lora else None,
                   hidden_dims=tuple(int(d) for d in h["hidden_dims"]), dropout=float(h["dropout"]),
                   task=_one_of("train.task", params["train"]["task"], TASKS),
                   views=_views(m["views"], m["input_scaling"]))

    @property
    def mode(self) -> str:
        return training_mode(self.unfreeze_last_n_blocks, self.lora is not None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["lora"] = LoraConfig(**{**d["lora"], "target_modules": tuple(d["lora"]["target_modules"])}) \
            if d.get("lora") else None
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _views(value, input_scaling) -> tuple:
    if not isinstance(value, list | tuple) or not value or len(set(value)) != len(value) \
            or any(v not in VIEWS for v in value):
        raise PipelineError(f"params.yaml: model.views={value!r}: a non-empty list of distinct views from "
                            f"{', '.join(VIEWS)}")
    if "trend" in value and input_scaling != "revin":
        raise PipelineError("params.yaml: model.views includes trend, which needs model.input_scaling=revin (the "
                            "train_zscore statistics are per waveform channel)")
    return tuple(v for v in VIEWS if v in value)


def training_mode(unfreeze_last_n_blocks: int, lora: bool) -> str:
    """fm when nothing in the backbone trains (frozen backbone, cached embeddings), else ft."""
    return "ft" if unfreeze_last_n_blocks > 0 or lora else "fm"


def _context_length(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= TTM_CONTEXT:
        raise PipelineError(f"model.context_length={value!r}: must be an integer 1-{TTM_CONTEXT}")
    return value


@dataclass(frozen=True)
class EmbeddingConfig:
    """What the frozen backbone's embeddings depend on (the embed stage's cache key)."""

    weights_dir: str
    input_scaling: str
    context_length: int
    views: tuple = ("waveform",)   # the cache holds these views' inputs only (every waveform channel per view)

    @classmethod
    def from_params(cls, params) -> "EmbeddingConfig":
        m = params["model"]
        return cls(weights_dir=str(m["weights_dir"]),
                   input_scaling=_one_of("model.input_scaling", m["input_scaling"], INPUT_SCALINGS),
                   context_length=_context_length(m["context_length"]),
                   views=_views(m["views"], m["input_scaling"]))

    def cache_key(self) -> dict:
        return {"input_scaling": self.input_scaling, "context_length": self.context_length}


@dataclass(frozen=True)
class FinetuneConfig:
    unfreeze_last_n_blocks: int
    lora: bool
    windows_per_epoch: int
    head_warmup_epochs: int

    @classmethod
    def from_params(cls, params) -> "FinetuneConfig":
        f = section(params, "finetune", _names(cls))
        return cls(unfreeze_last_n_blocks=_positive_int("finetune.unfreeze_last_n_blocks",
                                                        f["unfreeze_last_n_blocks"], 0),
                   lora=bool(f["lora"]), windows_per_epoch=_positive_int("finetune.windows_per_epoch",
                                                                         f["windows_per_epoch"], 0),
                   head_warmup_epochs=_positive_int("finetune.head_warmup_epochs", f["head_warmup_epochs"], 0))

    @property
    def mode(self) -> str:
        return training_mode(self.unfreeze_last_n_blocks, self.lora)


MONITORS = {"clf": ("val_auroc", "val_loss"), "reg": ("val_loss", "val_mae")}


@dataclass(frozen=True)
class LoopConfig:
    """One training loop's knobs (lib.model.training.train_model)."""

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
    seed: int = 0

    def __post_init__(self):
        for key in ("epochs", "batch_size", "grad_accum_steps"):
            _positive_int(f"train.{key}", getattr(self, key))
        _one_of("train.schedule", self.schedule, SCHEDULES)
        if self.amp not in ("auto", "off"):
            _fail("train.amp", self.amp, "expected auto (bf16/fp16 on CUDA) or off")


@dataclass(frozen=True)
class TrainConfig:
    """The train stage (and each CV fold): task, horizon, the loop, fine-tuning and the device."""

    task: str
    horizon_min: float
    loop: LoopConfig
    finetune: FinetuneConfig
    device: str

    KEYS = ("task", "horizon_min", "seed", "epochs", "batch_size", "grad_accum_steps", "lr", "weight_decay",
            "grad_clip", "schedule", "warmup_frac", "early_stopping_patience", "monitor", "amp", "device")

    @classmethod
    def from_params(cls, params) -> "TrainConfig":
        t = section(params, "train", cls.KEYS)
        task = _one_of("train.task", t["task"], TASKS)
        monitor = MONITORS[task][0] if t["monitor"] == "auto" else t["monitor"]
        if monitor not in MONITORS[task]:
            raise PipelineError(f"params.yaml: train.monitor={monitor!r} with train.task={task}: expected auto or "
                                f"one of {', '.join(MONITORS[task])}")
        ft = FinetuneConfig.from_params(params)
        loop = LoopConfig(epochs=t["epochs"], batch_size=t["batch_size"], grad_accum_steps=t["grad_accum_steps"],
                          lr=float(t["lr"]), weight_decay=float(t["weight_decay"]), grad_clip=float(t["grad_clip"]),
                          schedule=t["schedule"], warmup_frac=float(t["warmup_frac"]),
                          early_stopping_patience=_positive_int("train.early_stopping_patience",
                                                                t["early_stopping_patience"], 0),
                          monitor=monitor, amp=t["amp"], windows_per_epoch=ft.windows_per_epoch, seed=int(t["seed"]))
        return cls(task=task, horizon_min=float(t["horizon_min"]), loop=loop, finetune=ft, device=device(params))


# How the frozen TTM runs at inference (bench/inference_engines.py measured each on 2 cores).
INFERENCE_ENGINES = ("torchscript", "inductor", "onnxruntime", "eager")


@dataclass(frozen=True)
class InferenceConfig:
    """params.yaml `inference`: the engine that runs the frozen backbone in embed, calibrate and
    evaluate, and whether it runs under bfloat16 autocast. Outputs depend on both (within the
    tolerances in lib.model.ttm), so both are params of those stages."""

    engine: str = "torchscript"
    bf16: bool = False
    KEYS = ("engine", "bf16")

    @classmethod
    def from_params(cls, params) -> "InferenceConfig":
        i = section(params, "inference", cls.KEYS)
        if not isinstance(i["bf16"], bool):
            _fail("inference.bf16", i["bf16"], "must be true or false")
        engine = _one_of("inference.engine", i["engine"], INFERENCE_ENGINES)
        if engine == "onnxruntime" and i["bf16"]:
            _fail("inference.engine", engine, "runs float32 only: set inference.bf16=false or another engine")
        return cls(engine=engine, bf16=i["bf16"])


@dataclass(frozen=True)
class EmbedConfig:
    """params.yaml `embed`: how the embed stage stores its cache (float32, or float16: half the disk
    and the bytes train reads; read back as float32). Only the embed stage reads it: train and the
    CV folds see a float32 cache either way, and DVC reruns them when the cache changes."""

    dtype: str = "float32"
    KEYS = ("dtype",)
    DTYPES = WindowsConfig.DTYPES   # float16 storage is read back as float32 alike

    @classmethod
    def from_params(cls, params) -> "EmbedConfig":
        e = section(params, "embed", cls.KEYS)
        return cls(dtype=_one_of("embed.dtype", e["dtype"], cls.DTYPES))


def device(params) -> str:
    """train.device: auto | cpu | cuda[:n] (not a dependency: outputs do not depend on it)."""
    return str(params["train"]["device"])


# --- calibration, baselines, evaluation, cross-validation ----------------------------------------

@dataclass(frozen=True)
class CalibrateConfig:
    method: str = "platt"
    threshold_rule: str = "youden"
    target_sensitivity: float = 0.8
    ece_bins: int = 15

    @classmethod
    def from_params(cls, params) -> "CalibrateConfig":
        c = section(params, "calibrate", _names(cls))
        return cls(method=_one_of("calibrate.method", c["method"], CALIBRATION_METHODS),
                   threshold_rule=_one_of("calibrate.threshold_rule", c["threshold_rule"], THRESHOLD_RULES),
                   target_sensitivity=float(c["target_sensitivity"]),
                   ece_bins=_positive_int("calibrate.ece_bins", c["ece_bins"]))


@dataclass(frozen=True)
class BaselinesConfig:
    """The baselines stage: which task/horizon/channels, the CNN's loop (shares train's optimiser knobs)."""

    task: str
    horizon_min: float
    channels: tuple
    cnn_loop: LoopConfig
    device: str
    weights_dir: str = "models/ttm-r2-512-96"   # the zero-shot forecaster's TTM (model.weights_dir)
    trend_step_s: int = 10                      # trend.step_s: seconds per bin of the stored trend view
    forecast_softness_mmhg: float = 2.0
    forecast_finetune: ForecastFinetune = ForecastFinetune()

    KEYS = ("cnn_epochs", "cnn_batch_size", "cnn_lr", "cnn_windows_per_epoch", "cnn_early_stopping_patience",
            "forecast_softness_mmhg")

    @classmethod
    def from_params(cls, params) -> "BaselinesConfig":
        b, t = section(params, "baselines", cls.KEYS), params["train"]
        loop = LoopConfig(epochs=b["cnn_epochs"], batch_size=b["cnn_batch_size"], grad_accum_steps=1,
                          lr=float(b["cnn_lr"]), weight_decay=float(t["weight_decay"]), grad_clip=float(t["grad_clip"]),
                          schedule="cosine", warmup_frac=float(t["warmup_frac"]),
                          early_stopping_patience=_positive_int("baselines.cnn_early_stopping_patience",
                                                                b["cnn_early_stopping_patience"], 0),
                          monitor="val_auroc", amp=t["amp"],
                          windows_per_epoch=_positive_int("baselines.cnn_windows_per_epoch",
                                                          b["cnn_windows_per_epoch"], 0), seed=int(t["seed"]))
        softness = float(b["forecast_softness_mmhg"])
        if not softness >= 0:
            raise PipelineError(f"params.yaml: baselines.forecast_softness_mmhg={softness}: must be >= 0")
        return cls(task=_one_of("train.task", t["task"], TASKS), horizon_min=float(t["horizon_min"]),
                   channels=tuple(params["model"]["input_channels"]), cnn_loop=loop, device=device(params),
                   weights_dir=str(params["model"]["weights_dir"]),
                   trend_step_s=_positive_int("trend.step_s", params["trend"]["step_s"]),
                   forecast_softness_mmhg=softness, forecast_finetune=ForecastFinetune.from_params(params))


@dataclass(frozen=True)
class EvaluateConfig:
    ece_bins: int = 15
    bootstrap: int = 1000
    ci_level: float = 0.95
    seed: int = 0
    overlap: float = 0.5
    voting: str = "soft"
    age_bands: tuple = (40, 65)
    min_subjects: int = 10              # fewer test subjects (in a group): metrics and CIs are n/a
    min_positive_subjects: int = 5      # fewer subjects with a positive window: n/a
    backward_gap_min: float = 20.0      # backward negatives: at least this far (min) from any event
    backward_min_map: float = 75.0      # ... and current MAP at least this (mmHg)
    backward_tolerance_s: float = 60.0  # backward positives: next onset in [h*60 - this, h*60] s

    @classmethod
    def from_params(cls, params) -> "EvaluateConfig":
        e = section(params, "evaluate", _names(cls))
        if not 0 < float(e["ci_level"]) < 1:
            _fail("evaluate.ci_level", e["ci_level"], "must be in (0, 1)")
        return cls(ece_bins=_positive_int("evaluate.ece_bins", e["ece_bins"]),
                   bootstrap=_positive_int("evaluate.bootstrap", e["bootstrap"]), ci_level=float(e["ci_level"]),
                   seed=int(e["seed"]), overlap=float(e["overlap"]),
                   voting=_one_of("evaluate.voting", e["voting"], VOTING), age_bands=tuple(e["age_bands"]),
                   min_subjects=_positive_int("evaluate.min_subjects", e["min_subjects"]),
                   min_positive_subjects=int(e["min_positive_subjects"]),
                   backward_gap_min=float(e["backward_gap_min"]), backward_min_map=float(e["backward_min_map"]),
                   backward_tolerance_s=float(e["backward_tolerance_s"]))


@dataclass(frozen=True)
class CVConfig:
    enabled: bool
    n_folds: int
    folds: tuple
    seed: int

    @classmethod
    def from_params(cls, params) -> "CVConfig":
        c = section(params, "cv", _names(cls))
        n_folds = int(c["n_folds"])
        if n_folds < 3 or list(c["folds"]) != list(range(n_folds)):
            raise PipelineError(f"params.yaml: cv.folds={c['folds']} must be [0, ..., n_folds-1] with cv.n_folds="
                                f"{n_folds} >= 3 (one DVC stage per fold)")
        return cls(enabled=bool(c["enabled"]), n_folds=n_folds, folds=tuple(c["folds"]), seed=int(c["seed"]))


ALL = (DataConfig, DemoConfig, SplitsConfig, WindowsConfig, ModelConfig, InferenceConfig, EmbedConfig, TrainConfig,
       CalibrateConfig, BaselinesConfig, EvaluateConfig, CVConfig)


def validate(params) -> None:
    """Build every section's config: the first stage calls this, so a typo in train.* or evaluate.*
    stops the run before an hour of windows, not in the stage that reads it."""
    for cls in ALL:
        cls.from_params(params)
    unknown = sorted(set(params) - {"data", "demo", "splits", "windows", "trend", "model", "finetune", "lora", "head",
                                    "inference", "embed", "train", "calibrate", "baselines", "evaluate", "cv"})
    if unknown:
        raise PipelineError(f"params.yaml: unknown section {unknown[0]}")
