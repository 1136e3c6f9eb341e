"""Pickled request bodies without code execution (docs/serving.md, "Untrusted input").

Flow-GRPO's and verl-omni's HTTP clients send `pickle.dumps({...})`. Unpickling runs whatever the body names, so
the body's opcodes are read first (`pickletools.genops` builds no object) and any opcode that could name a
class or call a function is refused before `pickle` sees the body, as is a body that would make the
unpickler itself spend unbounded memory or time (`_Shapes`). What is admitted builds only dict, list,
tuple, str, bytes, int, float, bool and None; the unpickler then refuses every global again, in case an opcode
list ever misses one."""

from __future__ import annotations

import io
import pickle
import pickletools

from llscore.errors import LLScoreError

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


class UnsafePickle(LLScoreError):
    """A pickled body that names a class or function, or that is not a whole pickle."""


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise UnsafePickle(f"the body names {module}.{name}; only plain data is accepted")

    def persistent_load(self, pid):
        raise UnsafePickle("the body holds a persistent id; only plain data is accepted")


MAX_OPCODES = 200_000
MAX_DEPTH = 32
MAX_INT_BITS = 64
_MARK = object()
_SCALARS = {
    **dict.fromkeys(("NONE",), "none"),
    **dict.fromkeys(("NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2"), "number"),
    **dict.fromkeys(("LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"), "number"),
    **dict.fromkeys(("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE"), "str"),
    **dict.fromkeys(("BINUNICODE", "BINUNICODE8"), "str"),
    **dict.fromkeys(("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"), "bytes"),
}


class _Shapes:
    """The pickle machine run on shapes, not values: what kind each stack entry is and how deep it nests,
    enough to refuse what would cost the unpickler unbounded memory or time (a memo index far ahead of the
    memo, nesting deep enough to overflow the C stack when hashed, dict keys whose hashes an attacker
    chooses) before `pickle` builds anything."""

    def __init__(self):
        self.stack: list = []
        self.memo: list = []

    def push(self, kind: str, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise UnsafePickle(f"the body nests deeper than {MAX_DEPTH} levels")
        self.stack.append((kind, depth))

    def pop_to_mark(self) -> list:
        items = []
        while (entry := self.stack.pop()) is not _MARK:
            items.append(entry)
        return items[::-1]

    def container(self, kind: str, items: list) -> None:
        self.push(kind, 1 + max((depth for _, depth in items), default=0))

    def add_to_top(self, kind: str, items: list) -> None:
        top_kind, depth = self.stack.pop()
        if top_kind != kind:
            raise UnsafePickle(f"the body adds items to a {top_kind}, not a {kind}")
        if kind == "dict":
            _check_keys(items)
        self.push(kind, max([depth, *(d + 1 for _, d in items)]))

    def step(self, name: str, argument) -> None:
        if name in _SCALARS:
            if name.startswith("LONG") and abs(argument).bit_length() > MAX_INT_BITS:
                raise UnsafePickle(f"an integer of {abs(argument).bit_length()} bits is refused")
            self.push(_SCALARS[name])
        elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE"):
            self.push(name.removeprefix("EMPTY_").lower(), 1)
        elif name == "MARK":
            self.stack.append(_MARK)
        elif name in ("LIST", "TUPLE", "DICT"):
            items = self.pop_to_mark()
            if name == "DICT":
                _check_keys(items)
            self.container(name.lower(), items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = self.stack[-count:]
            del self.stack[-count:]
            if len(items) != count or _MARK in items:
                raise UnsafePickle("a tuple opcode finds too few items")
            self.container("tuple", items)
        elif name == "APPEND":
            self.add_to_top("list", [self.stack.pop()])
        elif name == "SETITEM":
            value, key = self.stack.pop(), self.stack.pop()
            self.add_to_top("dict", [key, value])
        elif name in ("APPENDS", "SETITEMS"):
            items = self.pop_to_mark()
            self.add_to_top("list" if name == "APPENDS" else "dict", items)
        elif name == "POP":
            self.stack.pop()
        elif name == "POP_MARK":
            self.pop_to_mark()
        elif name == "DUP":
            self.stack.append(self.stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(self.memo) if name == "MEMOIZE" else argument
            if index > len(self.memo):  # the unpickler would grow its memo to the index
                raise UnsafePickle(f"memo index {index} skips ahead of the {len(self.memo)} entries stored")
            self.memo[index : index + 1] = [self.stack[-1]]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            self.stack.append(self.memo[argument])


def _check_keys(items: list) -> None:
    """Dict keys must be text: str hashes are salted per process, so no body can make its keys collide."""
    for key, _ in items[0::2]:
        if key != "str":
            raise UnsafePickle(f"a dict key is a {key}; only str keys are accepted")


def check_opcodes(body: bytes) -> None:
    """Every opcode of `body` admitted, its memo, nesting and keys bounded (`_Shapes`), and `body` one whole
    pickle: raises UnsafePickle naming what is refused, or saying where the body breaks off. Builds nothing."""
    shapes = _Shapes()
    try:
        for count, (opcode, argument, position) in enumerate(pickletools.genops(body)):
            if opcode.name not in ADMITTED_OPCODES:
                raise UnsafePickle(
                    f"pickle opcode {opcode.name} at byte {position} is refused: only dict, list, tuple, str, "
                    "bytes, numbers and None are accepted"
                )
            if count >= MAX_OPCODES:
                raise UnsafePickle(f"the body holds more than {MAX_OPCODES:,} pickle opcodes")
            shapes.step(opcode.name, argument)
    except UnsafePickle:
        raise
    except Exception as err:  # genops' ValueError on a truncated body; an empty stack on a garbled one
        raise UnsafePickle(f"not a whole pickle ({len(body)} bytes): {err or type(err).__name__}") from None


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
