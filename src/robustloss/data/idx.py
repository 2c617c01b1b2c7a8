"""Reader for the idx-ubyte files of MNIST, KMNIST and Fashion-MNIST.

Layout (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``00 00 TT DD`` where TT
is the element type (0x08 = unsigned byte, the only one these datasets use) and DD the
number of dimensions, then DD big-endian uint32 sizes, then the elements in C order.
Files may be gzipped; we look at the gzip magic bytes rather than trusting the suffix,
because torchvision and manual downloads disagree on whether ``.gz`` is kept.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from robustloss.data.format_error import DatasetFormatError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE_TYPE_CODE = 0x08
# The other codes of the format, named so that the error says what the file holds instead.
OTHER_TYPE_CODES = {0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an idx file (plain or gzipped), as uint8 with the header's shape."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:  # truncated download or damaged archive
            raise DatasetFormatError(f"{path}: cannot decompress gzip data ({err})") from None
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    if len(raw) < 4:
        raise DatasetFormatError(f"{source}: {len(raw)} bytes is too short for an idx header")
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise DatasetFormatError(
            f"{source}: not an idx file (magic number {raw[:4].hex()} should start with 0000)"
        )
    if type_code != UBYTE_TYPE_CODE:
        kind = OTHER_TYPE_CODES.get(type_code, "an unknown type")
        raise DatasetFormatError(
            f"{source}: idx element type code 0x{type_code:02x} ({kind}); only 0x08 (unsigned byte) "
            "is supported"
        )
    if ndim == 0:
        raise DatasetFormatError(f"{source}: idx header declares 0 dimensions")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DatasetFormatError(f"{source}: file ends inside the idx header ({ndim} dimensions declared)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(raw) - header_end
    if actual != expected:
        raise DatasetFormatError(
            f"{source}: idx header says shape {shape} ({expected} bytes of data) but the file holds "
            f"{actual} bytes; the file is truncated or damaged"
        )
    # copy() so the array owns writable memory (frombuffer over bytes is read-only).
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape).copy()

