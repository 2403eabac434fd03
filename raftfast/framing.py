"""Peer messages on the wire: `encode` / `decode` one message, and length-prefixed frames for
a byte stream. The byte layout is docs/wire-format.md.

    payload = encode(message)           # bytes; decode(payload) == message
    stream.write(encode_frame(message)) # u32 little-endian length, then the payload
    reader = FrameReader()
    for payload in reader.feed(chunk):  # whatever arrived, split at any byte
        message = decode(payload)

`decode`, `encode`, `encode_frame` and `FrameReader.feed` raise `EncodingError` (and nothing
else) on bad input. A frame that does not decode should close its connection.
"""

from .codec import MAX_FRAME, VERSION, FrameReader, decode, encode, encode_frame

__all__ = ["MAX_FRAME", "VERSION", "FrameReader", "decode", "encode", "encode_frame"]
