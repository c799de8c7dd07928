"""``mriseg export``: add a case and its corrected labels to a training dataset (nnU-Net v2 raw),
or write the labels alone (reference grid, or a sequence's native grid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_command

EXAMPLE = """mriseg export registered/ labels.nii.gz --dataset Dataset001_Brain --model demo.mriseg
  mriseg export case/ labels.nii.gz --registration registered/ --dataset Dataset001_Brain --native flair
  mriseg export case/ labels.nii.gz --registration registered/ --native flair --labels-out flair_labels.nii.gz"""

NOTES = """CASE must hold its sequences on one grid (e.g. the folder `mriseg register --out` wrote), or be
the original case with --registration pointing at that folder: then the co-registered sequences
and the transforms come from there and the native grids from CASE. The case ID is a hash of the
voxels unless --case-id is given (a number or hash: IDs that look like names are refused).
Every file of the case is written into a temporary folder inside the dataset and renamed into
place, dataset.json last; on any error the dataset is left as it was."""


def add_commands(sub) -> None:
    """Add ``export`` to the ``mriseg`` sub-parsers."""
    p = add_command(sub, "export", "add a case and its corrected labels to a training dataset (nnU-Net v2 raw "
                    "layout) with a provenance record, or write the labels alone", EXAMPLE)
    p.epilog = NOTES
    p.add_argument("case", help="case folder (co-registered, or the original with --registration)")
    p.add_argument("labels", help="corrected label map on the reference grid (.nii.gz, .nrrd, .mha)")
    p.add_argument("--dataset", metavar="DIR", help="training dataset folder (created, or appended to)")
    p.add_argument("--case-id", metavar="ID", help="case ID in the dataset (default: a hash of the voxels)")
    p.add_argument("--model", metavar="M",
                   help="model file whose channel order and label names the dataset follows (recorded as provenance)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing case / output file")
    p.add_argument("--native", metavar="SEQ", action="append", default=[],
                   help="also take the labels onto sequence SEQ's native grid (inverse registration, nearest): "
                        "kept in DIR/provenance/, or written to --labels-out (repeatable with --dataset)")
    p.add_argument("--registration", metavar="DIR",
                   help="folder written by `mriseg register --out` for this case (co-registered sequences, transforms)")
    p.add_argument("--reference", help="reference sequence of CASE (default: t1, else the first)")
    p.add_argument("--prediction", metavar="FILE",
                   help="the model's original prediction: Dice and volume change go to the provenance")
    p.add_argument("--reviewed", metavar="FILE", help="mask of reviewed voxels (non-zero = reviewed), reference grid")
    p.add_argument("--ignore-unreviewed", action="store_true",
                   help="write voxels outside --reviewed as nnU-Net's 'ignore' label")
    p.add_argument("--labels-out", metavar="FILE",
                   help="write the labels alone to FILE (reference grid, or --native SEQ's grid)")
    p.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    """Handler of ``mriseg export``; returns the exit code."""
    from ..core.case import load_case
    from ..core.errors import OptionError
    from ..core.export import (
        RegistrationRecord,
        export_case,
        labels_to_native,
        model_provenance,
        write_labels,
    )
    from ..core.io import read_volume
    from ..core.registration import REPORT_NAME

    if not args.dataset and not args.labels_out:
        raise OptionError("give --dataset DIR (add the case to a training dataset) and/or --labels-out FILE "
                          "(the labels alone)")
    if args.labels_out and len(args.native) > 1:
        raise OptionError("--labels-out writes one file: give at most one --native SEQ with it")
    if args.ignore_unreviewed and not args.reviewed:
        raise OptionError("--ignore-unreviewed needs --reviewed MASK (the voxels that were checked)")
    loaded = load_case(args.case, reference=args.reference)
    record: RegistrationRecord | None = None
    native_case = None
    sources: dict[str, Path] = {}
    if args.registration:
        record = RegistrationRecord.from_folder(args.registration)
        case = load_case(args.registration, reference=record.reference)
        native_case = loaded
        sources = {f"{n} (as acquired)": Path(str(v.meta["source"])) for n, v in loaded.sequences.items()
                   if v.meta.get("source")}
    else:
        case = loaded
        if (Path(args.case) / REPORT_NAME).is_file():  # a `mriseg register` folder: figures for provenance
            record = RegistrationRecord.from_folder(args.case)
    sources["labels"] = Path(args.labels)
    labels = read_volume(args.labels, kind="label", name="labels")

    natives = {}
    for seq in args.native:
        if native_case is None and record is not None and seq in record.transforms:
            raise OptionError(f"--native {seq}: CASE holds the co-registered sequences; pass the original case as "
                              "CASE and this folder as --registration DIR, so that the native grid is known")
        natives[seq] = labels_to_native(labels, record if native_case is not None else None, seq,
                                        native_case if native_case is not None else case)

    if args.dataset:
        channel_order = label_names = model_info = None
        if args.model:
            from ..ml.model_file import read_config

            config = read_config(args.model)
            channel_order, label_names = config.sequences, config.labels
            model_info = model_provenance(args.model, config)
        prediction = read_volume(args.prediction, kind="label") if args.prediction else None
        reviewed = read_volume(args.reviewed, kind="label") if args.reviewed else None
        result = export_case(case, labels, args.dataset, case_id=args.case_id, channel_order=channel_order,
                             label_names=label_names, reviewed=reviewed, ignore_unreviewed=args.ignore_unreviewed,
                             registration=record, model_info=model_info, prediction=prediction,
                             overwrite=args.overwrite, sources=sources,
                             native_labels=None if args.labels_out else natives)
        sys.stdout.write(result.summary() + "\n")
        for path in (*result.images, result.labels, result.provenance, *result.extra_files, result.dataset_json):
            sys.stdout.write(f"wrote {path}\n")
        for warning in result.warnings:
            sys.stderr.write(f"mriseg export: warning: {warning}\n")
    if args.labels_out:
        vol = natives[args.native[0]] if args.native else labels
        out = write_labels(vol, args.labels_out, overwrite=args.overwrite)
        grid = f"{args.native[0]}'s native grid" if args.native else "the reference grid"
        sys.stdout.write(f"wrote {out} (labels on {grid})\n")
    return 0
