"""The training code under torchrun: DistributedDataParallel, gloo backend, 2 CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")


HELPER = r'''
import hashlib, json, os, sys
import torch
from napari_mriseg.ml.training import TrainConfig, train
torch.set_num_threads(1)
cfg = TrainConfig(**json.loads(sys.argv[3]))
res = train(sys.argv[1], sys.argv[2], cfg)
h = hashlib.sha256()
for k, v in sorted(res.network.state_dict().items()):
    h.update(v.detach().cpu().float().numpy().tobytes())
rank = os.environ["RANK"]
with open(os.path.join(os.path.dirname(sys.argv[2]), f"rank{rank}.json"), "w") as fh:
    json.dump({"hash": h.hexdigest(), "world": os.environ["WORLD_SIZE"]}, fh)
'''


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_torchrun_two_processes_gloo(tmp_path):
    import hashlib

    from napari_mriseg.ml.model_file import load_model

    helpers = _training_helpers()
    TINY = helpers.TINY
    ds = helpers._dataset(tmp_path / "ds")
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    cfg = {k: v for k, v in TINY.__dict__.items() if k != "augmentation"}  # JSON-able; default augmentation
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(helper),
           str(ds), str(tmp_path / "m.mriseg"), json.dumps(cfg)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == "2"
    assert ranks[0]["hash"] == ranks[1]["hash"]  # replicas stayed in sync
    last = load_model(tmp_path / "m_last.mriseg")
    assert last.config.training["world_size"] == 2
    h = hashlib.sha256()
    for _, v in sorted(last.network.state_dict().items()):
        h.update(v.float().numpy().tobytes())
    assert h.hexdigest() == ranks[0]["hash"]  # rank 0 saved what both trained


def _training_helpers():
    """tests/test_ml_training.py as a module (its tiny dataset and settings)."""
    from . import test_ml_training

    return test_ml_training
