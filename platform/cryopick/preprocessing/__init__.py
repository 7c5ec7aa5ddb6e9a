"""Micrograph -> network input: Fourier-crop binning and normalisation (``binning``); picks -> label masks (``labels``)."""
