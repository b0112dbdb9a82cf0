"""The solution's side of the sandbox (stdlib only). Its source is passed to the solution's interpreter with
``-c``; it is not imported anywhere.

It loads the solution (``main.py`` in the work folder) as the ``__main__`` module, tells the test harness it
is ready, then answers the harness's requests (call a function, get or set an attribute, iterate, ...)
over two pipes: requests arrive on fd 3 (marshal), replies leave on fd 4 (JSON). A value travels as plain data when it is
plain data (None, bool, int, float, complex, str, bytes, bytearray and lists, tuples, dicts, sets and
frozensets of them; subclasses travel as their base type), anything else as a handle the harness can pass
back, call, iterate or read attributes of.

Nothing here is trusted: this code runs in the solution's process, which can change any of it. The harness
(``_harness.py``, another process under another uid) decodes what it receives strictly, so what this side
sends can only ever be plain data, a handle or an exception.

An exception while the solution loads ends the process with the usual traceback on stderr; so does
``exit()``. The harness then sees its pipe close and the tests fail.
"""

import builtins
import marshal
import os
import sys
from _json import encode_basestring_ascii as _json_str  # not the json package: it imports re (10 ms)

_IN, _OUT = 3, 4
_LIMIT = 1 << 63
_objects = {}  # handle -> object (kept alive, so id() stays unique)
_handles = {}  # id(object) -> handle


def _read(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(_IN, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _recv():  # the harness's requests: marshal (trusted, it is the harness's own data)
    return marshal.loads(_read(int.from_bytes(_read(4), "big")))


_INF = float("inf")
_ModuleType = type(sys)


def _json(v):
    """JSON text of what :func:`_enc` makes (None, bool, int, float, str, lists of them)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    t = type(v)
    if t is str:
        return _json_str(v)
    if t is int:
        return int.__repr__(v)
    if t is float:
        if v != v:
            return "NaN"
        if v == _INF or v == -_INF:
            return "Infinity" if v > 0 else "-Infinity"
        return float.__repr__(v)
    return "[" + ",".join(map(_json, v)) + "]"


def _send(obj):
    data = _json(obj).encode()
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[os.write(_OUT, view):]


def _handle(v):
    h = _handles.get(id(v))
    if h is None:
        h = _handles[id(v)] = len(_objects) + 1
        _objects[h] = v
    return ["r", h]


def _enc(v):
    if v is None or v is True or v is False:
        return v
    t = type(v)
    if t is str or t is float:
        return v
    if t is int:
        return v if -_LIMIT <= v < _LIMIT else ["I", hex(v)]
    if t is list:
        return ["l", *map(_enc, v)]
    if t is tuple:
        return ["t", *map(_enc, v)]
    if t is dict:
        out = ["d"]
        for k, x in v.items():
            out.append(_enc(k))
            out.append(_enc(x))
        return out
    if t is set:
        return ["S", *map(_enc, v)]
    if t is frozenset:
        return ["F", *map(_enc, v)]
    if t is bytes:
        return ["y", v.hex()]
    if t is bytearray:
        return ["Y", v.hex()]
    if t is complex:
        return ["c", v.real, v.imag]
    # subclasses of the data types (namedtuples, Counter, OrderedDict, IntEnum, ...) as their base type
    for base in (int, float, str, complex, bytes, bytearray, tuple, list, set, frozenset):
        if isinstance(v, base):
            return _enc(base(v))
    if isinstance(v, dict):
        return _enc(dict(v))
    return _handle(v)


def _dec(x):
    if type(x) is not list:
        return x
    tag = x[0]
    if tag == "l":
        return [_dec(i) for i in x[1:]]
    if tag == "t":
        return tuple(_dec(i) for i in x[1:])
    if tag == "d":
        it = iter(x[1:])
        return {_dec(k): _dec(v) for k, v in zip(it, it)}
    if tag == "S":
        return {_dec(i) for i in x[1:]}
    if tag == "F":
        return frozenset(_dec(i) for i in x[1:])
    if tag == "r":
        return _objects[x[1]]
    if tag == "I":
        return int(x[1], 16)
    if tag == "y":
        return bytes.fromhex(x[1])
    if tag == "Y":
        return bytearray.fromhex(x[1])
    if tag == "c":
        return complex(x[1], x[2])
    raise ValueError(f"unknown tag {tag!r}")


def _flush():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass


def _text(exc):
    try:
        return str(exc)[:2000]
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _globals(g, names):
    out = []
    for name in names:
        if name not in g:
            continue
        v = g[name]
        if isinstance(v, _ModuleType):
            out += [name, ["m", v.__name__] if v.__name__ == name else _handle(v)]
        else:
            out += [name, _enc(v)]
    return out


def _serve(g):
    ops = {
        "call": lambda o, args, kwargs: o(*_dec(args), **_dec(kwargs)),
        "getattr": getattr,
        "setattr": lambda o, name, value: setattr(o, name, _dec(value)),
        "iter": iter,
        "next": next,
        "len": len,
        "getitem": lambda o, key: o[_dec(key)],
        "str": str,
        "repr": repr,
        "bool": bool,
        "int": int,
        "float": float,
        "index": lambda o: o.__index__(),
    }
    while True:
        try:
            req = _recv()
        except EOFError:
            _flush()
            os._exit(0)
        try:
            if req[0] == "globals":
                reply = ["ok", _globals(g, req[1])]
            else:
                reply = ["ok", _enc(ops[req[0]](_objects[req[1]], *req[2:]))]
        except Exception as exc:  # the harness re-raises it; BaseExceptions (exit) end this process
            reply = ["raise", [c.__name__ for c in type(exc).__mro__], _text(exc)]
        _flush()
        _send(reply)


def main() -> None:
    path = os.path.abspath("main.py")
    sys.argv = ["main.py"]
    mod = _ModuleType("__main__")
    mod.__file__ = path
    mod.__builtins__ = builtins
    sys.modules["__main__"] = mod
    with open(path, "rb") as fh:
        code = compile(fh.read(), path, "exec")
    exec(code, mod.__dict__)
    _flush()
    _send(["ready"])
    _serve(mod.__dict__)


if __name__ == "__main__":
    main()
