"""The learning ring: UNet networks, model files, inference, training and metrics.

May import `napari_mriseg.core` and torch, never Qt, napari or magicgui. Importing this package
does not import torch: each module imports it where it is used (`metrics` never needs it).
"""
