"""Picking with a trained model: tiled heatmaps (``tiling``) -> peaks (``peaks``) -> edge band (``border``) and
carbon/ice mask (``mask``) -> coordinates; ``picker.pick_micrograph`` is the one picking path, ``pick_files`` is
``cryopick pick``."""
