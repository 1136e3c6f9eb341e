"""Pickled request bodies without code execution (docs/serving.md, "Untrusted input").

Flow-GRPO's and verl-omni's HTTP clients send `pickle.dumps({...})`. Unpickling runs whatever the body names, so
the body's opcodes are read first (`pickletools.genops` builds no object) and any opcode that could name a
class or call a function is refused before `pickle` sees the body. What is admitted builds only dict, list,
tuple, str, bytes, int, float, bool and None; the unpickler then refuses every global again, in case an opcode
list ever misses one."""

from __future__ import annotations

import io
import pickle
import pickletools

# the opcodes that build the admitted types, and the memo and stack bookkeeping around them
ADMITTED_OPCODES = frozenset(
    {
        *("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP"),
        *("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET"),
        *("NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"),
        *("FLOAT", "BINFLOAT"),
        *("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE"),
        *("BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"),
        *("EMPTY_LIST", "APPEND", "APPENDS", "LIST"),
        *("EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"),
        *("EMPTY_DICT", "DICT", "SETITEM", "SETITEMS"),
    }
)


class UnsafePickle(ValueError):
    """A pickled body that names a class or function, or that is not a whole pickle."""


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise UnsafePickle(f"the body names {module}.{name}; only plain data is accepted")

    def persistent_load(self, pid):
        raise UnsafePickle("the body holds a persistent id; only plain data is accepted")


def check_opcodes(body: bytes) -> None:
    """Every opcode of `body` admitted, and `body` one whole pickle: raises UnsafePickle naming the first
    refused opcode, or saying where the body breaks off. Builds nothing."""
    try:
        for opcode, _argument, position in pickletools.genops(body):
            if opcode.name not in ADMITTED_OPCODES:
                raise UnsafePickle(
                    f"pickle opcode {opcode.name} at byte {position} is refused: only dict, list, tuple, str, "
                    "bytes, numbers and None are accepted"
                )
    except UnsafePickle:
        raise
    except Exception as err:  # genops' own ValueError on a truncated or garbled body
        raise UnsafePickle(f"not a whole pickle ({len(body)} bytes): {err}") from None


def safe_loads(body: bytes):
    """The plain data of a pickled body, or UnsafePickle before any object is built."""
    check_opcodes(body)
    try:
        return _NoGlobals(io.BytesIO(body)).load()
    except UnsafePickle:
        raise
    except Exception as err:
        raise UnsafePickle(f"not a whole pickle ({len(body)} bytes): {err}") from None


def safe_dumps(value) -> bytes:
    """A reply pickled for the frameworks' clients, checked to hold plain data only (what `safe_loads` reads)."""
    body = pickle.dumps(value, protocol=4)
    check_opcodes(body)
    return body
