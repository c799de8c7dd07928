"""The plugin ring: npe2 contributions and the conversion between core objects and napari layers.

Only this package imports napari, Qt (through qtpy) and magicgui.
"""
