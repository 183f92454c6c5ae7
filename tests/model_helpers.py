"""Model configs for the tests: build_model's arguments with the tests' defaults (fm mode, every
channel, level features, the shipped weights)."""
from conftest import WEIGHTS

from lib.core.config import ModelConfig
from lib.core.params import Lora

LORA = Lora(r=8, alpha=16, dropout=0.1, target_modules=("fc1", "fc2", "attn_layer"))
DEFAULTS = dict(weights_dir=str(WEIGHTS), channels=("abp", "ppg", "ecg"), level_features=True, input_scaling="revin",
                context_length=512, unfreeze_last_n_blocks=0, lora=None, hidden_dims=(256, 128), dropout=0.2,
                task="clf")


def model_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**DEFAULTS, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}})
