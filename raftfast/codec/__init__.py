"""The wire codec kernel, compiled when available (see raftfast._selection).

Both twins export the same names with the same signatures and errors; `raftfast.framing` is
the public face.
"""

from .. import _selection
from ._format import MAX_FRAME, VERSION

if _selection.USE_EXTENSIONS:
    from ._codec_c import FrameReader, decode, encode, encode_frame
else:
    from ._codec_py import FrameReader, decode, encode, encode_frame

__all__ = ["MAX_FRAME", "VERSION", "FrameReader", "decode", "encode", "encode_frame"]
