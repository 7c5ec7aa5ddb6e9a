"""The U-Net that turns a micrograph into a particle-probability heatmap of the same size (``unet``)."""
