"""Picking a whole data set (``cryopick campaign``), resumable and fault tolerant, without Ray: settings
(``config``), what is left to do and when a micrograph is complete (``plan``), one picking worker (``worker``),
the RELION index and reports (``report``) and the run itself (``run``; on Ray through
:mod:`cryopick.distributed.batch`)."""
