"""Self-training campaigns without Ray: settings (``config``), the campaign directory's state and stopping rules
(``state``), pseudo-labels (``pseudo``), scoring and threshold choice (``scoring``), a round's files (``outputs``),
adopted or kept models (``reuse``) and the decisions between a round's stages (``stages``).
:mod:`cryopick.distributed.orchestrator` runs the rounds on Ray."""
