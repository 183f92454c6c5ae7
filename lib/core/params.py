"""params.yaml, one frozen dataclass per section: a section's fields are its keys, each validated
next to its declaration.

    windows = Windows.from_params(params)            # the whole section, every key checked
    horizon, seed = Train.pick(params, "horizon_min", "seed")   # some keys of a section

`from_params` refuses a missing or an unknown key, naming it (`params.yaml: windows.fs is missing`).
A stage's `config(params)` builds what it reads with these two calls only, so the keys it reads are
exactly its `params:` in dvc.yaml: the graph test (tests/test_dvc_graph.py) records them by running
each stage's `config` and prints the lines to paste when they differ.

Adding a key: add it to params.yaml and add the field here (with its check); the graph test then
prints the dvc.yaml line of each stage that reads it.

Keys whose value cannot change any output (process counts, download retries) are read but are not
DVC dependencies: they are listed in NOT_DEPENDENCIES.
"""
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import yaml

from lib.core.errors import PipelineError
from lib.core.schema import CHANNELS

# Read, but never a DVC dependency: outputs are identical for any value (tested for workers).
NOT_DEPENDENCIES = ("data.workers", "data.download", "windows.workers", "external.workers",
                    "external.download")
TTM_CONTEXT = 512   # the r2 512-96 weights' context length
VIEWS = ("waveform", "trend")   # model.views: what the backbone embeds (lib.core.schema.INPUTS)
MONITORS = {"clf": ("val_auroc", "val_loss"), "reg": ("val_loss", "val_mae")}   # train.monitor per train.task
INFERENCE_ENGINES = ("torchscript", "inductor", "onnxruntime", "eager")   # lib.model.engines
DTYPES = ("float32", "float16")   # how windows and embeddings are stored (= lib.data.windows_h5.DTYPES)
TASKS = ("clf", "reg")
INPUT_SCALINGS = ("revin", "train_zscore")
THRESHOLD_RULES = ("youden", "sensitivity")
VOTING = ("soft", "hard", "none")
SCHEDULES = ("cosine", "onecycle")
HEAD_TYPES = ("linear", "mlp")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")   # torch.nn's GELU, ReLU, SiLU, Tanh


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


# --- checks: (dotted key, raw value) -> validated value, or one line naming the key ----------------

def fail(key: str, value, expected: str):
    raise PipelineError(f"params.yaml: {key}={value!r}: {expected}")


def integer(minimum: int = 1, maximum: int | None = None):
    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum \
                or (maximum is not None and value > maximum):
            fail(key, value, f"must be an integer {minimum}-{maximum}" if maximum is not None
                 else f"must be an integer >= {minimum}")
        return value
    return check


def number(above: float | None = None, at_least: float | None = None, below: float | None = None):
    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(key, value, "must be a number")
        value = float(value)
        if (above is not None and not value > above) or (at_least is not None and not value >= at_least) \
                or (below is not None and not value < below):
            bounds = [f"> {above:g}" if above is not None else "", f">= {at_least:g}" if at_least is not None else "",
                      f"< {below:g}" if below is not None else ""]
            fail(key, value, "must be " + " and ".join(b for b in bounds if b))
        return value
    return check


def boolean(key, value):
    if not isinstance(value, bool):
        fail(key, value, "must be true or false")
    return value


def text(key, value):
    if not isinstance(value, str) or not value:
        fail(key, value, "must be a non-empty string")
    return value


def one_of(*choices):
    def check(key, value):
        if value not in choices:
            fail(key, value, f"expected one of {', '.join(choices)}")
        return value
    return check


def interval(key, value) -> tuple:
    if not isinstance(value, list | tuple) or len(value) != 2 or not value[0] < value[1]:
        fail(key, value, "must be [low, high] with low < high")
    return (float(value[0]), float(value[1]))


def strings(key, value) -> tuple:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        fail(key, value, "must be a list of names")
    return tuple(value)


def integers(key, value) -> tuple:
    if not isinstance(value, list | tuple) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        fail(key, value, "must be a list of integers")
    return tuple(value)


def horizons(key, value) -> tuple:
    if not isinstance(value, list | tuple) or not value or any(
            isinstance(h, bool) or not isinstance(h, int | float) or h <= 0 for h in value):
        fail(key, value, "must be a non-empty list of minutes > 0")
    return tuple(float(h) for h in value)


def track_aliases(tracks, key: str = "data.tracks") -> dict:
    """data.tracks ({channel: name or [names]}) as {channel: (names, ...)}: the first one present is used."""
    if not hasattr(tracks, "items"):
        fail(key, tracks, "must be a mapping channel -> track name(s)")
    aliases = {}
    for channel, names in tracks.items():
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) and n for n in names):
            fail(f"{key}.{channel}", names, "expected a track name or a list of alternative names "
                 "(e.g. [SNUADC/ART, Intellivue/ABP])")
        aliases[str(channel)] = tuple(names)
    return aliases


def case_caps(key, value) -> dict:
    if not hasattr(value, "items"):
        fail(key, value, "must be a mapping split -> cases")
    return {str(k): integer(1)(f"{key}.{k}", v) for k, v in value.items()}


def nested(section_cls):
    """A sub-mapping read as its own section dataclass (data.select, data.download)."""
    return lambda key, value: section_cls.from_mapping(key, value)


def key(default=MISSING, check=None, *, factory=MISSING):
    """A params key: its default (for code and tests that build a section by hand) and its check."""
    return field(default=default, default_factory=factory, metadata={"check": check})


class Section:
    """Base of the section dataclasses: `NAME` is the section in params.yaml."""

    NAME: ClassVar[str] = ""

    @classmethod
    def from_params(cls, params):
        if cls.NAME not in params:
            raise PipelineError(f"params.yaml: section {cls.NAME} is missing")
        return cls.from_mapping(cls.NAME, params[cls.NAME])

    @classmethod
    def from_mapping(cls, path: str, values):
        """The section at dotted `path` from its mapping: exactly the fields' keys, each checked."""
        if not hasattr(values, "keys"):
            raise PipelineError(f"params.yaml: {path} must be a mapping")
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in values]
        unknown = [k for k in values if k not in names]
        if missing:
            raise PipelineError(f"params.yaml: {path}.{missing[0]} is missing")
        if unknown:
            raise PipelineError(f"params.yaml: unknown key {path}.{unknown[0]} (known: {', '.join(names)})")
        out = cls(**{f.name: _checked(f, path, values[f.name]) for f in fields(cls)})
        out.check(path)
        return out

    @classmethod
    def pick(cls, params, *names):
        """Only `names` of the section, each checked: a tuple of values in that order (one value alone).
        What a stage picks is all it depends on in this section."""
        if cls.NAME not in params:
            raise PipelineError(f"params.yaml: section {cls.NAME} is missing")
        values, by_name = params[cls.NAME], {f.name: f for f in fields(cls)}
        out = []
        for name in names:
            if name not in values:
                raise PipelineError(f"params.yaml: {cls.NAME}.{name} is missing")
            out.append(_checked(by_name[name], cls.NAME, values[name]))
        return out[0] if len(out) == 1 else tuple(out)

    def check(self, path: str) -> None:
        """Checks across this section's keys (after each key's own check)."""

    @classmethod
    def check_value(cls, name: str, value):
        """Key `name`'s own check on `value` (for objects built from a section elsewhere: a checkpoint)."""
        return _checked({f.name: f for f in fields(cls)}[name], cls.NAME, value)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _checked(f, path: str, value):
    check = f.metadata.get("check")
    return check(f"{path}.{f.name}", value) if check else value


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- data and cohort -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Select(Section):
    """data.select: which VitalDB cases are eligible, decided offline from the case table."""

    NAME = "data.select"
    min_age: float = key(18.0, number(at_least=0))
    ane_types: tuple = key(("General",), strings)
    aline_sites: tuple = key(("radial",), strings)   # substrings of `aline1`, case-insensitive; () = any
    min_case_minutes: float = key(30.0, number(at_least=0))
    seed: int = key(0, integer(0))                   # which subjects data.max_cases draws


@dataclass(frozen=True)
class Download(Section):
    """data.download: VitalDB download retries and concurrency (not dependencies: same files for any value)."""

    NAME = "data.download"
    retries: int = key(3, integer(0))
    backoff_s: float = key(2.0, number(at_least=0))
    workers: int = key(4, integer(1))


@dataclass(frozen=True)
class Data(Section):
    NAME = "data"
    source: str = key("demo", one_of("demo", "local", "vitaldb"))
    clinical_csv: str = key("data/vitaldb/clinical_information.csv", text)
    vital_dir: str = key("data/raw", text)
    cache_dir: str = key("data/vitaldb_cache", text)
    max_cases: int = key(200, integer(0))
    select: Select = key(factory=Select, check=nested(Select))
    download: Download = key(factory=Download, check=nested(Download))
    # channel -> (track names, ...): the first one a recording has is used
    tracks: dict = key(factory=dict, check=lambda k, v: track_aliases(v, k))
    workers: int = key(2, integer(1))


@dataclass(frozen=True)
class Demo(Section):
    """The simulated demo cohort (data.source=demo)."""

    NAME = "demo"
    n_cases: int = key(220, integer(1))
    n_multi_case_subjects: int = key(8, integer(0))
    srate: float = key(100.0, number(above=0))
    min_minutes: float = key(30.0, number(above=0))
    max_minutes: float = key(60.0, number(above=0))
    ioh_fraction: float = key(0.45, number(at_least=0))
    seed: int = key(2024, integer(0))

    def check(self, path):
        if not self.min_minutes <= self.max_minutes:
            fail(f"{path}.min_minutes", self.min_minutes, f"must be <= {path}.max_minutes={self.max_minutes:g}")
        if not self.ioh_fraction <= 1:
            fail(f"{path}.ioh_fraction", self.ioh_fraction, "must be in [0, 1]")


@dataclass(frozen=True)
class ExternalDemo(Demo):
    """external.demo: the simulated second hospital (external.source=demo), shifted from the training demo
    on purpose: another seed, older and sicker patients (age >= min_age, ASA >= min_asa, more of them with
    hypotension), 500-Hz recordings under Philips IntelliVue track names, no monitor numeric tracks."""

    NAME = "external.demo"
    n_cases: int = key(42, integer(1))
    n_multi_case_subjects: int = key(0, integer(0))
    srate: float = key(500.0, number(above=0))
    min_minutes: float = key(25.0, number(above=0))
    max_minutes: float = key(35.0, number(above=0))
    ioh_fraction: float = key(0.65, number(at_least=0))   # ~2x the demo's 5-min window positive rate
    seed: int = key(7, integer(0))
    min_age: float = key(60.0, number(at_least=0))   # years: an older population
    min_asa: int = key(2, integer(1))                # ASA physical status: a sicker one


@dataclass(frozen=True)
class External(Data):
    """external: a second cohort the frozen model, calibrators and baselines are validated on, without
    retraining (stages external_cohort, external_windows, external_evaluate). Its keys are data's, plus
    the simulated second hospital (`demo`) and the optional recalibration on a held-out part of it."""

    NAME = "external"
    source: str = key("demo", one_of("none", "demo", "local", "vitaldb"))
    demo: ExternalDemo = key(factory=ExternalDemo, check=nested(ExternalDemo))
    # share of the external subjects held out to refit each calibrator on that cohort (0 = no recalibration);
    # the refitted calibrators are scored on the other subjects only, and reported apart
    recalibrate_fraction: float = key(0.0, number(at_least=0, below=1))

    def as_data(self) -> Data:
        """The cohort keys as a `data` section (source demo, local or vitaldb), for the cohort code."""
        return Data(**{f.name: getattr(self, f.name) for f in fields(Data)})


@dataclass(frozen=True)
class Splits(Section):
    NAME = "splits"
    train: float = key(0.6, number(at_least=0))
    val: float = key(0.2, number(at_least=0))
    test: float = key(0.2, number(at_least=0))
    seed: int = key(42, integer(0))
    fasttrack: bool = key(True, boolean)
    fasttrack_max_cases: dict = key(factory=lambda: {"train": 50, "val": 20}, check=case_caps)

    def check(self, path):
        if abs(sum(self.ratios.values()) - 1) > 1e-6:
            raise PipelineError(f"params.yaml: {path}.train/val/test must sum to 1 (got {self.ratios})")

    @property
    def ratios(self) -> dict:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def max_cases(self) -> dict | None:
        """The fasttrack caps {split: cases}, None when fasttrack is off."""
        return dict(self.fasttrack_max_cases) if self.fasttrack else None


# --- windows -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Windows(Section):
    """How windows are cut, filtered, gated and labelled; the value lib.data.windowing works from."""

    NAME = "windows"
    LABEL_DURATION_S: ClassVar[int] = 60       # an IOH event: MAP < map_threshold for at least this long
    RINGING_MARGIN_S: ClassVar[float] = 1.0    # filter ringing masked next to invalid stretches
    fs: int = key(125, integer(1))
    length: int = key(512, integer(1, TTM_CONTEXT))
    stride: int = key(512, integer(1))
    horizons_min: tuple = key((5.0, 10.0, 15.0), horizons)
    map_threshold: float = key(65.0, number(above=0))
    label_min_valid: float = key(0.8, number(above=0))
    label_rule: str = key("within", one_of("within", "at"))   # lib.signal.labels.RULES
    post_event_gap_min: float = key(10.0, number(at_least=0))
    ppg_band_hz: tuple = key((0.4, 7.0), interval)
    ecg_band_hz: tuple = key((0.5, 40.0), interval)
    abp_lowpass_hz: float = key(20.0, number(above=0))
    ecg_sqi_min: float = key(0.9, number())
    ppg_ssqi_min: float = key(0.8, number())
    min_beats: int = key(3, integer(0))
    map_range: tuple = key((20.0, 200.0), interval)
    pulse_pressure_range: tuple = key((15.0, 150.0), interval)
    map_slope_window_s: int = key(300, integer(1))
    dtype: str = key("float32", one_of(*DTYPES))
    workers: int = key(2, integer(1))

    def check(self, path):
        for name in ("ppg_band_hz", "ecg_band_hz"):
            band = getattr(self, name)
            if band[0] <= 0 or band[1] >= self.fs / 2:
                fail(f"{path}.{name}", list(band), f"must lie inside (0, fs/2 = {self.fs / 2:g}) Hz")

    def for_test(self, overlap: float) -> "Windows":
        """The test split's windows: overlapping by `overlap` (evaluate.overlap), for voting."""
        return replace(self, stride=max(1, round(self.length * (1 - overlap))))

    def to_attrs(self) -> dict:
        """What the windows files record of how they were made (workers is not: outputs do not depend on it)."""
        return {k: v for k, v in self.to_dict().items() if k != "workers"}


@dataclass(frozen=True)
class Trend(Section):
    """The trend view stored with every window, and the optional fine-tuned MAP forecaster (ttm_finetuned)."""

    NAME = "trend"
    step_s: int = key(10, integer(1))
    context: int = key(512, integer(1, TTM_CONTEXT))
    finetune: bool = key(False, boolean)
    finetune_windows: int = key(4096, integer(64))    # train windows drawn once; val: a quarter as many
    finetune_epochs: int = key(10, integer(1))
    finetune_lr: float = key(1e-3, number(above=0))
    finetune_patience: int = key(3, integer(1))

    def to_attrs(self) -> dict:
        """What the windows files record of the trend view they hold."""
        return {"step_s": self.step_s, "context": self.context}


# --- model and training -----------------------------------------------------------------------------

def channels(key_, value) -> tuple:
    if not isinstance(value, list | tuple) or not value or len(set(value)) != len(value) \
            or any(c not in CHANNELS for c in value):
        fail(key_, list(value) if isinstance(value, tuple) else value, f"use distinct names from {', '.join(CHANNELS)}")
    return tuple(value)


def check_task_inputs(task: str, input_channels) -> None:
    """Regression estimates the pressure measured on the ABP channel, so ABP may not be an input."""
    if task == "reg" and "abp" in input_channels:
        raise PipelineError("params.yaml: train.task=reg estimates the blood pressure measured on the ABP channel: "
                            "remove abp from model.input_channels (e.g. -S 'model.input_channels=[ppg,ecg]')")


def views(key_, value) -> tuple:
    if not isinstance(value, list | tuple) or not value or len(set(value)) != len(value) \
            or any(v not in VIEWS for v in value):
        fail(key_, value, f"a non-empty list of distinct views from {', '.join(VIEWS)}")
    return tuple(v for v in VIEWS if v in value)


@dataclass(frozen=True)
class Model(Section):
    NAME = "model"
    weights_dir: str = key("models/ttm-r2-512-96", text)
    input_channels: tuple = key(("abp", "ppg", "ecg"), channels)
    level_features: bool = key(True, boolean)
    input_scaling: str = key("revin", one_of(*INPUT_SCALINGS))
    context_length: int = key(512, integer(1, TTM_CONTEXT))
    views: tuple = key(("waveform",), views)

    def check(self, path):
        if "trend" in self.views and self.input_scaling != "revin":
            raise PipelineError(f"params.yaml: {path}.views includes trend, which needs {path}.input_scaling=revin "
                                "(the train_zscore statistics are per waveform channel)")


@dataclass(frozen=True)
class Inference(Section):
    """How embed, calibrate and evaluate run the frozen TTM (lib.model.engines). Outputs depend on
    both keys (within the engines' tolerances), so both are params of those stages."""

    NAME = "inference"
    engine: str = key("torchscript", one_of(*INFERENCE_ENGINES))
    bf16: bool = key(False, boolean)

    def check(self, path):
        if self.engine == "onnxruntime" and self.bf16:
            fail(f"{path}.engine", self.engine, "runs float32 only: set inference.bf16=false or another engine")


@dataclass(frozen=True)
class Embed(Section):
    """How the embed stage stores its cache (read back as float32 either way)."""

    NAME = "embed"
    dtype: str = key("float32", one_of(*DTYPES))


@dataclass(frozen=True)
class Finetune(Section):
    """Nothing unfrozen and no LoRA = fm mode (frozen backbone, cached embeddings); otherwise ft."""

    NAME = "finetune"
    unfreeze_last_n_blocks: int = key(0, integer(0))
    lora: bool = key(False, boolean)
    windows_per_epoch: int = key(2048, integer(0))
    val_windows_per_epoch: int = key(0, integer(0))
    head_warmup_epochs: int = key(5, integer(0))

    @property
    def mode(self) -> str:
        return training_mode(self.unfreeze_last_n_blocks, self.lora)


def training_mode(unfreeze_last_n_blocks: int, lora: bool) -> str:
    """fm when nothing in the backbone trains (frozen backbone, cached embeddings), else ft."""
    return "ft" if unfreeze_last_n_blocks > 0 or lora else "fm"


@dataclass(frozen=True)
class Lora(Section):
    NAME = "lora"
    r: int = key(8, integer(1))
    alpha: int = key(16, integer(1))
    dropout: float = key(0.1, number(at_least=0, below=1))
    target_modules: tuple = key(("fc1", "fc2", "attn_layer"), strings)


@dataclass(frozen=True)
class Head(Section):
    """The head on the embeddings, in either training mode: linear, or an MLP of `hidden_dims`."""

    NAME = "head"
    type: str = key("linear", one_of(*HEAD_TYPES))
    hidden_dims: tuple = key((256, 128), integers)
    activation: str = key("gelu", one_of(*ACTIVATIONS))
    dropout: float = key(0.2, number(at_least=0, below=1))


@dataclass(frozen=True)
class Train(Section):
    NAME = "train"
    task: str = key("clf", one_of(*TASKS))
    horizon_min: float = key(5.0, number(above=0))
    seed: int = key(1, integer(0))
    epochs: int = key(10, integer(1))
    batch_size: int = key(64, integer(1))
    grad_accum_steps: int = key(1, integer(1))
    lr: float = key(1e-3, number(above=0))
    weight_decay: float = key(0.01, number(at_least=0))
    grad_clip: float = key(1.0, number(at_least=0))
    schedule: str = key("cosine", one_of(*SCHEDULES))
    warmup_frac: float = key(0.05, number(at_least=0, below=1))
    early_stopping_patience: int = key(10, integer(0))
    monitor: str = key("auto", one_of("auto", "val_auroc", "val_loss", "val_mae"))
    amp: str = key("auto", one_of("auto", "off"))
    device: str = key("auto", text)   # auto | cpu | cuda[:n]
    nproc_per_node: int = key(1, integer(1))   # > 1: the stage command runs under torchrun (dvc.yaml templating)

    def check(self, path):
        if self.monitor != "auto" and self.monitor not in MONITORS[self.task]:
            raise PipelineError(f"params.yaml: {path}.monitor={self.monitor!r} with {path}.task={self.task}: "
                                f"expected auto or one of {', '.join(MONITORS[self.task])}")

    @property
    def monitored(self) -> str:
        """The metric early stopping and the kept state follow (train.monitor, auto resolved by task)."""
        return MONITORS[self.task][0] if self.monitor == "auto" else self.monitor


# --- calibration, baselines, evaluation, cross-validation --------------------------------------------

@dataclass(frozen=True)
class Calibrate(Section):
    """Fitted on val only, for the model and each baseline alike."""

    NAME = "calibrate"
    method: str = key("platt", one_of("temperature", "platt", "isotonic"))
    threshold_rule: str = key("youden", one_of(*THRESHOLD_RULES))
    target_sensitivity: float = key(0.8, number(above=0))
    ece_bins: int = key(15, integer(1))


@dataclass(frozen=True)
class Baselines(Section):
    NAME = "baselines"
    cnn_epochs: int = key(10, integer(1))
    cnn_batch_size: int = key(128, integer(1))
    cnn_lr: float = key(1e-3, number(above=0))
    cnn_windows_per_epoch: int = key(16384, integer(0))
    cnn_val_windows_per_epoch: int = key(32768, integer(0))
    cnn_early_stopping_patience: int = key(4, integer(0))
    forecast_softness_mmhg: float = key(2.0, number(at_least=0))


def numbers(key_, value) -> tuple:
    if not isinstance(value, list | tuple) or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0
                                                  for v in value):
        fail(key_, value, "must be a list of numbers > 0")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Alarm(Section):
    """evaluate.alarm: each scorer judged as a monitor's alarm on the test cases' timelines
    (lib.eval.alarms; operating points chosen on val)."""

    NAME = "evaluate.alarm"
    hold_s: float = key(30.0, number(at_least=0))            # risk >= threshold this long before an alarm starts
    refractory_s: float = key(300.0, number(at_least=0))     # no new alarm this long after one starts
    lead_max_min: float = key(15.0, number(above=0))         # an alarm warns of an IOH onset up to this far ahead
    sensitivity_targets: tuple = key((0.8, 0.9), numbers)    # val-chosen thresholds reaching these event sensitivities
    false_alarm_budgets_per_h: tuple = key((1.0, 2.0), numbers)   # ... and these false alarms per hour
    map_alarm_mmhg: float = key(72.0, number(above=0))       # the fixed MAP alarm (Mulder 2024: ~ HPI's alarms)
    gray_zone_mmhg: tuple = key((65.0, 75.0), interval)      # AUROC where current MAP is in this range (Chaari 2025)


@dataclass(frozen=True)
class Evaluate(Section):
    NAME = "evaluate"
    ece_bins: int = key(15, integer(1))
    bootstrap: int = key(1000, integer(1))
    ci_level: float = key(0.95, number(above=0, below=1))
    seed: int = key(0, integer(0))
    overlap: float = key(0.5, number(at_least=0, below=1))
    voting: str = key("soft", one_of(*VOTING))
    age_bands: tuple = key((40, 65), integers)
    min_subjects: int = key(10, integer(1))              # fewer test subjects (in a group): metrics and CIs n/a
    min_positive_subjects: int = key(5, integer(0))      # fewer subjects with a positive window: n/a
    backward_gap_min: float = key(20.0, number(at_least=0))    # backward negatives: this far (min) from any event
    backward_min_map: float = key(75.0, number(at_least=0))    # ... and current MAP at least this (mmHg)
    backward_tolerance_s: float = key(60.0, number(at_least=0))   # positives: next onset in [h*60 - this, h*60] s
    alarm: Alarm = key(factory=Alarm, check=nested(Alarm))


@dataclass(frozen=True)
class CV(Section):
    NAME = "cv"
    enabled: bool = key(False, boolean)
    n_folds: int = key(5, integer(3))
    folds: tuple = key((0, 1, 2, 3, 4), integers)
    seed: int = key(7, integer(0))

    def check(self, path):
        if list(self.folds) != list(range(self.n_folds)):
            raise PipelineError(f"params.yaml: {path}.folds={list(self.folds)} must be [0, ..., n_folds-1] with "
                                f"{path}.n_folds={self.n_folds} (one DVC stage per fold)")


SECTIONS = (Data, Demo, Splits, Windows, Trend, Model, Inference, Embed, Finetune, Lora, Head, Train, Calibrate,
            Baselines, Evaluate, CV, External)


def validate(params) -> None:
    """Build every section: the first stage calls this, so a typo in train.* or evaluate.* stops the
    run before an hour of windows, not in the stage that reads it."""
    unknown = sorted(set(params) - {cls.NAME for cls in SECTIONS})
    if unknown:
        raise PipelineError(f"params.yaml: unknown section {unknown[0]}")
    for cls in SECTIONS:
        cls.from_params(params)
    check_task_inputs(Train.pick(params, "task"), Model.pick(params, "input_channels"))
