"""The core ring: numpy, SimpleITK, nibabel, pydicom. Never Qt, napari or torch."""
