"""Reading `params.yaml` slices in stages, with one-line errors for bad keys and values."""
from pathlib import Path

import yaml

from lib.errors import PipelineError


def load(*sections, path="params.yaml") -> dict:
    """{section: dict} for the requested top-level sections of params.yaml."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"{path}: cannot read params ({err})") from err
    missing = [s for s in sections if s not in (params or {})]
    if missing:
        raise PipelineError(f"{path}: missing section(s) {', '.join(missing)}")
    return {s: params[s] for s in sections}


def require(section: dict, name: str, keys) -> None:
    """Fail on a key missing from, or unknown to, a params section (typos do not pass silently)."""
    missing = [k for k in keys if k not in section]
    unknown = [k for k in section if k not in keys]
    if missing:
        raise PipelineError(f"params.yaml: {name}.{missing[0]} is missing")
    if unknown:
        raise PipelineError(f"params.yaml: unknown key {name}.{unknown[0]} (known: {', '.join(keys)})")
