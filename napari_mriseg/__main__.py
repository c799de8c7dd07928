"""``python -m napari_mriseg`` runs the ``mriseg`` command line."""

import sys

from napari_mriseg.cli import main

sys.exit(main())
