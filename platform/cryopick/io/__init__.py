"""Reading and writing micrographs and coordinate files, atomically."""

from cryopick.io.atomic import atomic_write
from cryopick.io.coords import FORMATS, read_coords, write_coords
from cryopick.io.micrograph import Micrograph, read_micrograph, write_mrc

__all__ = [
    "FORMATS",
    "Micrograph",
    "atomic_write",
    "read_coords",
    "read_micrograph",
    "write_coords",
    "write_mrc",
]
