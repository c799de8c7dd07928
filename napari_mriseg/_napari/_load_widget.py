"""'Load case' dock widget: pick a folder or files, check the sequence names, choose the
reference, load in a worker thread, and show the case in radiological orientation."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.case import Case, CaseEntry, load_entries, scan_case
from .layers import KEY, case_layer_data
from .views import PLANES, set_plane
from .workspace import Workspace

log = logging.getLogger(__name__)


class LoadCaseWidget(QWidget):
    """Load a case (folder, files or DICOM folder) as one layer per sequence plus labels."""

    def __init__(self, napari_viewer: Any, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        #: The shared state of this viewer's case (see `workspace.Workspace`).
        self.workspace = workspace if workspace is not None else Workspace.of(napari_viewer)
        self.entries: list[CaseEntry] = []
        self.case: Case | None = None
        self._worker: Any = None

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("case folder, DICOM folder or volume file")
        self.path_edit.editingFinished.connect(lambda: self.scan(self.path_edit.text()))
        folder_btn = QPushButton("Folder…")
        folder_btn.clicked.connect(self._choose_folder)
        files_btn = QPushButton("Files…")
        files_btn.clicked.connect(self._choose_files)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(folder_btn)
        row.addWidget(files_btn)

        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["source", "name", "role"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._names_changed)

        self.reference = QComboBox()
        ref_row = QHBoxLayout()
        ref_row.addWidget(QLabel("reference"))
        ref_row.addWidget(self.reference, 1)

        self.load_btn = QPushButton("Load")
        self.load_btn.setEnabled(False)
        self.load_btn.clicked.connect(self.load)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setTextVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        planes = QHBoxLayout()
        for plane in PLANES:
            btn = QPushButton(plane.capitalize())
            btn.clicked.connect(lambda _=False, p=plane: set_plane(self.viewer, p))
            planes.addWidget(btn)

        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addLayout(ref_row)
        layout.addWidget(self.load_btn)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(planes)

    # ------------------------------------------------------------------ choosing
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Case or DICOM folder")
        if folder:
            self.scan(folder)

    def _choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Sequence files", filter="Volumes (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd)")
        if files:
            self.scan(files)

    def scan(self, source: str | list[str]) -> None:
        """List what ``source`` holds (headers only) so names can be checked before loading."""
        if not source:
            return
        if isinstance(source, str):
            self.path_edit.setText(source)
        try:
            entries = scan_case(source if isinstance(source, str) else [Path(s) for s in source])
        except Exception as exc:  # the core raises MriSegError with a message for the user
            self._fail(exc)
            return
        self.entries = entries
        self.table.blockSignals(True)
        self.table.setRowCount(len(entries))
        for r, e in enumerate(entries):
            src = QTableWidgetItem(e.description or e.path.name)
            src.setToolTip(str(e.path))
            role = QTableWidgetItem(e.kind)
            for item in (src, role):
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(r, 0, src)
            self.table.setItem(r, 1, QTableWidgetItem(e.name))
            self.table.setItem(r, 2, role)
        self.table.blockSignals(False)
        self._refresh_reference()
        self.load_btn.setEnabled(any(e.kind == "image" for e in entries))
        self.status.setText(f"{sum(e.kind == 'image' for e in entries)} sequence(s) found")

    def _names_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 1 and item.row() < len(self.entries):
            self.entries[item.row()] = dataclasses.replace(self.entries[item.row()], name=item.text().strip())
            self._refresh_reference()

    def _refresh_reference(self) -> None:
        current = self.reference.currentText()
        names = [e.name for e in self.entries if e.kind == "image"]
        self.reference.clear()
        self.reference.addItems(names)
        default = current if current in names else next((n for n in ("t1", "t1c", "t2", "flair") if n in names), "")
        if default:
            self.reference.setCurrentText(default)

    # ------------------------------------------------------------------ loading
    def load(self) -> Any:
        """Load the listed entries in a worker thread; returns the worker."""
        entries, reference = list(self.entries), self.reference.currentText() or None
        self.load_btn.setEnabled(False)
        self.progress.setRange(0, 0)  # busy
        self.status.setText("loading…")
        worker = create_worker(load_entries, entries, reference=reference, _ignore_errors=True)
        worker.returned.connect(self._show_case)
        worker.errored.connect(self._fail)
        worker.finished.connect(self._done)
        self._worker = worker
        worker.start()
        return worker

    def _show_case(self, case: Case) -> None:
        self.case = case
        self._remove_previous_case()
        for data, kwargs, kind in case_layer_data(case):
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.workspace.set_case(case, sources=[e.path for e in self.entries])
        set_plane(self.viewer, "axial")
        mis = case.misregistered()
        msg = f"{case.case_id}: {', '.join(case.names)} (reference {case.reference})"
        if mis:
            msg += f"; not on the reference grid yet: {', '.join(mis)} (co-register them)"
        self.status.setText(msg)
        show_info(f"Loaded {msg}")

    def _remove_previous_case(self) -> None:
        """Remove the layers of the case worked on so far (its unsaved edits were autosaved when
        an autosaver runs): one case per viewer, so the panels never mix two cases' layers."""
        previous = self.workspace.case
        if previous is None:
            return
        from .autosave import autosaver_of

        saver = autosaver_of(self.workspace)
        if saver is not None and saver.has_unsaved_work:
            saver.save_now()  # before its layers go
        for layer in list(self.viewer.layers):
            info = layer.metadata.get(KEY) or {}
            if info.get("case_id") == previous.case_id:
                self.viewer.layers.remove(layer)

    def _fail(self, exc: BaseException) -> None:
        log.error("load failed: %s", exc)
        self.status.setText(f"error: {exc}")
        show_error(str(exc))

    def _done(self) -> None:
        self.progress.setRange(0, 1)
        self.load_btn.setEnabled(bool(self.entries))
