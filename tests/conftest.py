import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEIGHTS = ROOT / "models" / "ttm-r2-512-96"
TRACKS = {"abp": "SNUADC/ART", "ppg": "SNUADC/PLETH", "ecg": "SNUADC/ECG_II"}


@pytest.fixture(scope="session")
def clinical():
    from lib.cohort import load_clinical
    return load_clinical(ROOT / "data" / "vitaldb" / "clinical_information.csv")
