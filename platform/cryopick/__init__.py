"""cryopick: self-training U-Net particle picking for cryo-EM micrographs.

The data path (micrograph -> preprocess -> patches -> model -> heatmap -> peaks -> coordinates
-> metrics) is plain typed functions in this package; Ray lives in ``cryopick.distributed``.
"""

__version__ = "0.1.0"
