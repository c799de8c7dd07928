"""The clinician's loop closes: phantoms -> register -> predict -> correct -> export -> fine-tune ->
the new model loads and segments. Core functions only (the ones the panels call); the same loop
through the napari panels is in tests/test_workflow_widget.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_mriseg._napari._segment_widget import DEMO_MODEL

pytestmark = pytest.mark.skipif(not DEMO_MODEL.exists(), reason="the demo model is made by scripts/train_demo_model.py")


@pytest.mark.slow
def test_predict_correct_export_finetune_segment(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    from napari_mriseg.core import label_ops
    from napari_mriseg.core.dataset import read_dataset
    from napari_mriseg.core.export import export_case
    from napari_mriseg.core.phantom import make_phantom_case
    from napari_mriseg.core.registration import register_case
    from napari_mriseg.ml.metrics import evaluate
    from napari_mriseg.ml.model_file import load_model
    from napari_mriseg.ml.segment import segment

    model = load_model(DEMO_MODEL)
    dataset = tmp_path / "Dataset042_Loop"
    before, after = [], []
    for seed in (9101, 9102, 9103):
        pc = make_phantom_case(seed, spacing_mm=2.0, misalign=True)
        reg = register_case(pc.case.replace(labels=None), reference="t1")
        case = reg.case
        pred = segment(case, model).labels
        before.append(evaluate(pred, pc.truth)["whole_tumour"]["dice"])

        # scripted corrections, as the Correct panel applies them
        arr = pred.array
        spacing = case.grid.spacing
        arr = label_ops.remove_islands(arr, None, min_volume_mm3=50.0, spacing=spacing)
        for value in model.config.labels.values():
            arr = label_ops.fill_holes(arr, value)
        wrong = arr != pc.truth.array
        box = label_ops.dilate_mask(pc.truth.array > 0, margin_mm=4.0, spacing=spacing)  # the clinician's fix
        fix = np.where(box & wrong)
        arr = arr.copy()
        arr[fix] = pc.truth.array[fix]
        corrected = pred.with_array(arr)
        after.append(evaluate(corrected, pc.truth)["whole_tumour"]["dice"])
        reviewed = box
        res = export_case(case, corrected, dataset, channel_order=model.config.sequences,
                          label_names=model.config.labels, reviewed=reviewed, ignore_unreviewed=seed == 9103,
                          registration=reg, prediction=pred,
                          model_info={"name": DEMO_MODEL.name})
        prov = json.loads(res.provenance.read_text())
        assert prov["edits"]  # Dice / volume change vs the prediction are recorded
        # reload the written labels with nibabel and SimpleITK: same affine, same voxels
        lab_file = res.labels
        from napari_mriseg.core.convert import grid_to_ras_affine

        np.testing.assert_allclose(nib.load(lab_file).affine, grid_to_ras_affine(case.grid), atol=1e-5)
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(lab_file)))
        expect = np.where(reviewed, corrected.array, 4) if seed == 9103 else corrected.array
        assert np.count_nonzero(written != expect) == 0

    assert min(after) > max(0.95, max(before) - 0.01)  # the corrections did something
    info = read_dataset(dataset)
    assert len(info.cases) == 3 and info.ignore_value == 4

    out = tmp_path / "tuned.mriseg"
    cmd = ["train", str(dataset), "--out", str(out), "--init", str(DEMO_MODEL), "--epochs", "1", "--iterations", "2",
           "--batch-size", "1", "--device", "cpu", "--seed", "1"]
    proc = subprocess.run([sys.executable, "-c", "import sys; from napari_mriseg.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *cmd], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tuned = load_model(out)
    assert tuned.config.labels == model.config.labels and tuned.config.sequences == model.config.sequences
    pc = make_phantom_case(9104, spacing_mm=2.0, misalign=False)
    case = pc.case
    from napari_mriseg.core.resample import resample_to_grid

    for name in case.misregistered():
        case = case.with_sequence(name, resample_to_grid(case[name], case.grid))
    seg = segment(case, tuned).labels
    assert seg.grid.mismatch(case.grid) is None
    assert evaluate(seg, pc.truth)["whole_tumour"]["dice"] > 0.5  # a short fine-tune keeps the model usable
