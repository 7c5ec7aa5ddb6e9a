"""Scoring picks against expert picks: matching, PR curves and F1 (``metrics``), directories of pick files
(``evaluate``, ``cryopick evaluate``) and figures (``plots``)."""
