"""`encode_puts`, `parse_responses`: the compiled twin (`_loadgen_c`) when built, else `_loadgen_py`.

The load generator's kernel follows `raftfast._selection` like the others: compiled only when
every kernel was built.
"""

from .. import _selection

if _selection.USE_EXTENSIONS:
    from ._loadgen_c import MALFORMED, MAX_RESPONSE, MORE, NOT_LEADER, encode_puts, parse_responses
else:
    from ._loadgen_py import MALFORMED, MAX_RESPONSE, MORE, NOT_LEADER, encode_puts, parse_responses

__all__ = ["MALFORMED", "MAX_RESPONSE", "MORE", "NOT_LEADER", "encode_puts", "parse_responses"]
