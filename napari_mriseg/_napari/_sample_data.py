"""npe2 sample data: the synthetic brain tumour case shipped in ``sample_data/``."""

from __future__ import annotations

from pathlib import Path

from ..core.case import load_case
from .layers import case_layer_data

SAMPLE_CASE = Path(__file__).resolve().parents[1] / "sample_data" / "sample_case"


def sample_case() -> list[tuple]:
    """Layer data of the sample case: four sequences and the tumour labels, in mm."""
    return case_layer_data(load_case(SAMPLE_CASE))
