"""'Export' dock widget: add the corrected case to a training dataset (nnU-Net v2 raw layout) or
save the labels alone (reference grid, a sequence's native grid, or DICOM SEG).

The panel gathers what the workspace holds (co-registered case, labels layer, reviewed mask,
prediction, registration, model) and runs `napari_mriseg.core.export.export_case` in a worker
thread; the core writes all files of the case or none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.dataset import channel_names_of, propose_case_id, read_dataset_meta
from ..core.export import (
    ExportResult,
    case_exists,
    export_case,
    export_dicom_seg,
    labels_to_native,
    model_provenance,
    write_labels,
)
from ..core.volume import Volume
from .layers import layer_state_to_volume
from .workspace import Workspace

log = logging.getLogger(__name__)

REFERENCE = "reference"
LABEL_FILTERS = "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha)"
DICOM_SEG_FILTER = "DICOM SEG (*.dcm)"


class ExportWidget(QWidget):
    """Export the corrected case to a training dataset, or its labels alone."""

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        #: The shared state of this viewer's case (see `workspace.Workspace`).
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        #: The last successful dataset export.
        self.last_result: ExportResult | None = None
        #: The last file written by 'Save labels only'.
        self.last_labels_path: Path | None = None
        self._worker: Any = None
        self._proposed = ""
        self._order_edited = False
        self._edits = 0
        self._edits_at_start = 0

        self.dataset_edit = QLineEdit()
        self.dataset_edit.setPlaceholderText("training dataset folder (nnU-Net v2 raw: created or appended)")
        self.dataset_edit.editingFinished.connect(self.refresh)
        folder_btn = QPushButton("Folder…")
        folder_btn.clicked.connect(self._choose_dataset)
        ds_row = QHBoxLayout()
        ds_row.addWidget(self.dataset_edit, 1)
        ds_row.addWidget(folder_btn)

        self.case_id_edit = QLineEdit()
        self.case_id_edit.setToolTip("a hash of the voxels, or a number: never a patient's name")
        propose_btn = QPushButton("Propose")
        propose_btn.clicked.connect(lambda: self._propose(force=True))
        id_row = QHBoxLayout()
        id_row.addWidget(self.case_id_edit, 1)
        id_row.addWidget(propose_btn)

        self.channel_list = QListWidget()
        self.channel_list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.channel_list.setMaximumHeight(90)
        self.channel_list.setToolTip("channel order of the dataset (drag to reorder): the model's input order")
        self.channel_list.model().rowsMoved.connect(self._order_moved)
        self.order_source = QLabel("")

        self.ignore_check = QCheckBox("export unreviewed voxels as 'ignore'")
        self.ignore_check.setToolTip("nnU-Net's ignore label: voxels not marked reviewed are left out of training")

        form = QFormLayout()
        form.addRow("dataset", ds_row)
        form.addRow("case ID", id_row)
        form.addRow("channels", self.channel_list)
        form.addRow("", self.order_source)

        self.export_btn = QPushButton("Export to dataset")
        self.export_btn.clicked.connect(self.export)

        self.grid_combo = QComboBox()
        self.grid_combo.setToolTip("grid of the saved labels: the reference, or a sequence as acquired")
        self.save_btn = QPushButton("Save labels only…")
        self.save_btn.clicked.connect(lambda: self.save_labels())
        save_row = QHBoxLayout()
        save_row.addWidget(self.grid_combo, 1)
        save_row.addWidget(self.save_btn)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setTextVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.ignore_check)
        layout.addWidget(self.export_btn)
        layout.addWidget(QLabel("labels alone, on"))
        layout.addLayout(save_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.workspace.case_changed.connect(self._case_changed)
        self.workspace.prediction_changed.connect(lambda _=None: self.refresh())
        self.workspace.labels_edited.connect(self._count_edit)
        self.refresh()

    # ------------------------------------------------------------------ state shown
    def _case_changed(self, _case: Any = None) -> None:
        self._order_edited = False
        self.refresh()

    def _count_edit(self) -> None:
        self._edits += 1

    def _order_moved(self, *_: Any) -> None:
        self._order_edited = True
        self.order_source.setText("channel order edited by hand")

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.refresh()
        super().showEvent(event)

    def refresh(self) -> None:
        """Show the current case: proposed ID, channel order, grids for 'Save labels only'."""
        case = self.workspace.case
        has_case = case is not None
        self.export_btn.setEnabled(has_case)
        self.save_btn.setEnabled(has_case)
        if not has_case:
            self.channel_list.clear()
            self.grid_combo.clear()
            self.order_source.setText("")
            self.status.setText("load a case first")
            return
        self._propose()
        if not self._order_edited:
            names, source = self.default_channel_order()
            self.channel_list.clear()
            self.channel_list.addItems(names)
            self.order_source.setText(f"channel order from {source}")
        current = self.grid_combo.currentData()
        self.grid_combo.clear()
        self.grid_combo.addItem(f"reference grid ({case.reference})", REFERENCE)
        native = self.workspace.loaded_case or case
        for name in native.names:
            if name != case.reference:
                self.grid_combo.addItem(f"native grid of {name}", name)
        index = self.grid_combo.findData(current)
        self.grid_combo.setCurrentIndex(max(index, 0))
        if self.status.text() == "load a case first":
            self.status.setText("")

    def _propose(self, *, force: bool = False) -> None:
        case = self.workspace.case
        if case is None:
            return
        text = self.case_id_edit.text().strip()
        if force or not text or text == self._proposed:
            try:
                self._proposed = propose_case_id([case[n] for n in case.names])
            except Exception as exc:  # pragma: no cover - hashing cannot fail on a loaded case
                log.warning("no case ID proposed: %s", exc)
                return
            self.case_id_edit.setText(self._proposed)

    def default_channel_order(self) -> tuple[list[str], str]:
        """(names, where from): the model's inputs if a model is loaded, else the dataset's
        channels if the folder holds a dataset, else the case's sequences."""
        config = getattr(self.workspace.model, "config", None)
        if config is not None and getattr(config, "sequences", None):
            name = Path(self.workspace.model_path).name if self.workspace.model_path else "the model"
            return list(config.sequences), f"model {name}"
        folder = self.dataset_edit.text().strip()
        if folder:
            try:
                meta = read_dataset_meta(folder)
            except Exception:  # an invalid dataset.json is reported when exporting
                meta = None
            if meta is not None:
                return list(channel_names_of(meta)), "the dataset"
        case = self.workspace.case
        return (list(case.names) if case is not None else []), "the case"

    def channel_order(self) -> list[str]:
        """The channel order shown (drag to change)."""
        return [self.channel_list.item(i).text() for i in range(self.channel_list.count())]

    def _choose_dataset(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Training dataset folder")
        if folder:
            self.dataset_edit.setText(folder)
            self.refresh()

    # ------------------------------------------------------------------ gathering
    def current_labels(self) -> Volume:
        """A copy of the labels layer on the reference grid (painting may go on meanwhile)."""
        layer = self.workspace.labels_layer()
        if layer is None:
            raise ValueError("no labels layer: segment or paint labels first")
        return layer_state_to_volume(np.array(layer.data, copy=True), self._layer_state(layer), kind="label")

    def current_reviewed(self) -> np.ndarray | None:
        """The reviewed mask on the reference grid (None when nothing tracks it)."""
        layer = self.workspace.labels_layer()
        reviewed = self.workspace.reviewed
        if layer is None or reviewed is None or np.shape(reviewed) != np.shape(layer.data):
            return None
        vol = layer_state_to_volume(reviewed.astype(np.uint8), self._layer_state(layer), kind="label")
        return vol.array > 0

    @staticmethod
    def _layer_state(layer: Any) -> dict[str, Any]:
        return {"scale": layer.scale, "translate": layer.translate, "affine": layer.affine.affine_matrix,
                "metadata": layer.metadata, "name": layer.name}

    def export_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `export_case` for the current state (raises with a message)."""
        ws = self.workspace
        case = ws.case
        if case is None:
            raise ValueError("load a case first")
        folder = self.dataset_edit.text().strip()
        if not folder:
            raise ValueError("choose a dataset folder first")
        if not self._order_edited:
            self.refresh()
        labels = self.current_labels()
        if labels.grid.mismatch(case.grid) is not None:
            raise ValueError("the labels layer is not on the case's reference grid; segment or load labels again")
        config = getattr(ws.model, "config", None)
        model_info = None
        if ws.model is not None or ws.model_path is not None:
            model_info = model_provenance(ws.model_path, config)
        return dict(case=case, labels=labels, dataset_dir=Path(folder),
                    case_id=self.case_id_edit.text().strip() or None, channel_order=self.channel_order(),
                    label_names=dict(config.labels) if config is not None else None,
                    reviewed=self.current_reviewed(), ignore_unreviewed=self.ignore_check.isChecked(),
                    registration=ws.registration, model_info=model_info, prediction=ws.prediction,
                    sources=list(ws.sources))

    # ------------------------------------------------------------------ export
    def _confirm_overwrite(self, case_id: str) -> bool:
        answer = QMessageBox.question(
            self, "Replace the case?",
            f"The dataset already holds case {case_id}.\nReplace its images, labels and provenance?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def export(self) -> Any:
        """Export the case in a worker thread; returns the worker (None if nothing was started)."""
        try:
            kwargs = self.export_arguments()
        except Exception as exc:
            self._fail(exc)
            return None
        case_id = kwargs["case_id"]
        if case_id and case_exists(kwargs["dataset_dir"], case_id):
            if not self._confirm_overwrite(case_id):
                self.status.setText(f"not exported: case {case_id} exists already and was kept")
                return None
            kwargs["overwrite"] = True
        return self._start(export_case, kwargs, self._exported, f"exporting {case_id or 'the case'}…")

    def _exported(self, result: ExportResult) -> None:
        self.last_result = result
        images = result.images[0].relative_to(result.dataset).as_posix()
        if len(result.images) > 1:
            images = images.replace("_0000.", f"_0000-{len(result.images) - 1:04d}.", 1)
        files = "\n  ".join([images, *(p.relative_to(result.dataset).as_posix()
                                       for p in (result.labels, result.provenance, result.dataset_json))])
        warn = "".join(f"\nwarning: {w}" for w in result.warnings)
        self.status.setText(f"{result.summary()}\nwrote:\n  {files}{warn}")
        self.status.setToolTip(str(result.dataset))
        self._saved()
        show_info(result.summary())

    # ------------------------------------------------------------------ labels alone
    def save_labels(self, path: str | Path | None = None, target: str | None = None, *,
                    overwrite: bool = False) -> Any:
        """Write the labels alone to ``path`` on ``target``'s grid (``"reference"`` or a sequence
        name; default: the combo box). ``.dcm`` writes a DICOM SEG of that sequence's DICOM series.
        Without ``path`` a file dialog asks (and confirms replacing). Returns the worker."""
        target = target or self.grid_combo.currentData() or REFERENCE
        if path is None:
            filters = LABEL_FILTERS + (f";;{DICOM_SEG_FILTER}" if self._dicom_folder(target) else "")
            chosen, _ = QFileDialog.getSaveFileName(self, "Save labels", "labels.nii.gz", filters)
            if not chosen:
                return None
            path, overwrite = chosen, True  # the dialog asked before replacing a file
        try:
            labels = self.current_labels()
        except Exception as exc:
            self._fail(exc)
            return None
        ws = self.workspace
        dicom = self._dicom_folder(target) if str(path).lower().endswith(".dcm") else None

        def write() -> Path:
            vol = labels if target == REFERENCE else labels_to_native(labels, ws.registration, target,
                                                                       ws.loaded_case or ws.case)
            if str(path).lower().endswith(".dcm"):
                if dicom is None:
                    raise ValueError(f"DICOM SEG needs a sequence read from DICOM; {target} was not")
                label_names = getattr(getattr(ws.model, "config", None), "labels", None)
                return export_dicom_seg(vol, dicom, path, label_names=label_names, overwrite=overwrite)
            return write_labels(vol, path, overwrite=overwrite)

        grid = "the reference grid" if target == REFERENCE else f"the native grid of {target}"

        def done(out: Path) -> None:
            self.last_labels_path = Path(out)
            self.status.setText(f"wrote {out} (labels on {grid})")
            self._saved()
            show_info(f"Saved labels to {out}")

        return self._start(write, {}, done, f"saving labels on {grid}…")

    def _dicom_folder(self, target: str) -> Path | None:
        ws = self.workspace
        case = ws.loaded_case or ws.case
        if case is None:
            return None
        name = case.reference if target == REFERENCE else target
        src = case[name].meta.get("source") if name in case.sequences else None
        return Path(str(src)) if src and Path(str(src)).is_dir() else None

    # ------------------------------------------------------------------ worker plumbing
    def _start(self, func: Any, kwargs: dict[str, Any], on_done: Any, message: str) -> Any:
        self._edits_at_start = self._edits
        self.export_btn.setEnabled(False)
        self.save_btn.setEnabled(False)
        self.progress.setRange(0, 0)  # busy
        self.status.setText(message)
        worker = create_worker(func, _ignore_errors=True, **kwargs)
        worker.returned.connect(on_done)
        worker.errored.connect(self._fail)
        worker.finished.connect(self._finished)
        self._worker = worker
        worker.start()
        return worker

    def _saved(self) -> None:
        if self._edits == self._edits_at_start:
            self.workspace.dirty = False  # nothing was painted while writing

    def _finished(self) -> None:
        self.progress.setRange(0, 1)
        has_case = self.workspace.case is not None
        self.export_btn.setEnabled(has_case)
        self.save_btn.setEnabled(has_case)

    def _fail(self, exc: BaseException) -> None:
        log.error("export failed: %s", exc)
        self.status.setText(f"error: {exc}")
        show_error(str(exc))
