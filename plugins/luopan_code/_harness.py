"""The test harness: the trusted side of the sandbox (stdlib only).

It runs in a process of its own, forked from the launcher and never sharing a process with the solution
(as root, under a uid of its own, so the solution can neither signal, trace nor read it). It runs the
benchmark's tests (and, for HumanEval, the prompt's own helper functions: dataset code) and calls the
solution's functions in the solution's process (``_stub.py``) over two pipes. The verdict is this process's
exit status, which only the launcher sees:

- 0: the tests ran to their end;
- 1: a test failed (an exception in the tests, the solution's exceptions included: they are re-raised here);
- 2: the solution sent something that is not a valid message;
- 3: the solution's process ended (or closed its pipe) before the tests finished.

What comes back from the solution is decoded only into plain builtin values (None, bool, int, float,
complex, str, bytes, bytearray, list, tuple, dict, set, frozenset) or into :class:`Remote` handles for its
other objects, so ``==``, ``abs()``, ``in`` and every other operation the tests apply to a result run on this
process's real builtins. A handle is equal only to a handle of the same object, has no arithmetic and no
ordering; it can be passed back, called, iterated, indexed, and its attributes read and set (the answers are
decoded the same way).
"""

import _json
import builtins
import marshal
import os
import sys

MAX_MESSAGE = 1 << 30
_LIMIT = 1 << 63


class _Context:  # what the C JSON scanner reads (the json package would import re: 6 ms per run)
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


_scan = _json.make_scanner(_Context())


def loads(data: bytes):
    """JSON to Python (what ``json.loads`` does, through the same C scanner, on compact input)."""
    text = data.decode("utf-8")
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def dumps(value) -> str:
    """Compact JSON of None, bool, int, float, str, lists and dicts with str keys."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    return "[" + ",".join(map(dumps, value)) + "]"


class SolutionGone(BaseException):
    """The solution's process ended, or closed its pipe, before answering (never caught by the tests)."""


class ProtocolError(BaseException):
    """The solution's process sent something that is not a valid message (never caught by the tests)."""


class SolutionError(Exception):
    """An exception raised in the solution whose class is not a builtin one (nor derived from one)."""


_EXCEPTIONS = {name: cls for name, cls in vars(builtins).items()
               if isinstance(cls, type) and issubclass(cls, Exception)}


class Remote:
    """A handle on one of the solution's objects (an instance of a class it defines, a generator, ...)."""

    __slots__ = ("_conn", "_id")

    def __init__(self, conn: "Conn", handle: int) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_id", handle)

    def _ask(self, op, *args):
        return self._conn.request(op, self._id, *args)

    def __call__(self, *args, **kwargs):
        return self._ask("call", self._conn.encode(list(args)), self._conn.encode(kwargs))

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name)

    def __setattr__(self, name, value):
        self._ask("setattr", name, self._conn.encode(value))

    def __iter__(self):
        return self._ask("iter")

    def __next__(self):
        return self._ask("next")

    def __len__(self):
        return self._ask("len")

    def __getitem__(self, key):
        return self._ask("getitem", self._conn.encode(key))

    def __bool__(self):
        return self._ask("bool")

    def __str__(self):
        return self._ask("str")

    def __repr__(self):
        return self._ask("repr")

    def __int__(self):
        return self._ask("int")

    def __float__(self):
        return self._ask("float")

    def __index__(self):
        return self._ask("index")

    def __eq__(self, other):
        return isinstance(other, Remote) and other._conn is self._conn and other._id == self._id

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash((Remote, self._id))


class Conn:
    """The harness's end of the pipes to the solution's process."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd

    # ---------------------------------------------------------------- framing
    def _read(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = os.read(self.rfd, n - len(buf))
            except OSError as exc:
                raise SolutionGone(f"the solution's pipe failed: {exc}") from None
            if not chunk:
                raise SolutionGone("the solution's process ended before the tests finished")
            buf += chunk
        return bytes(buf)

    def _recv(self):
        n = int.from_bytes(self._read(4), "big")
        if n > MAX_MESSAGE:
            raise ProtocolError(f"the solution sent a message of {n} bytes")
        data = self._read(n)
        try:
            return loads(data)
        except (ValueError, RecursionError, MemoryError) as exc:
            raise ProtocolError(f"the solution sent an invalid message: {type(exc).__name__}") from None

    def _send(self, msg):
        data = marshal.dumps(msg)  # the solution's side reads marshal: it needs no import for it
        view = memoryview(len(data).to_bytes(4, "big") + data)
        while view:
            try:
                n = os.write(self.wfd, view)
            except OSError as exc:  # EPIPE: the solution's process is gone
                raise SolutionGone(f"the solution's process ended before the tests finished ({exc})") from None
            view = view[n:]

    # ---------------------------------------------------------------- values
    def encode(self, v):
        """A value of the tests as a message: plain data or a handle of the solution's; nothing else."""
        if v is None or v is True or v is False:
            return v
        t = type(v)
        if t is str or t is float:
            return v
        if t is int:
            return v if -_LIMIT <= v < _LIMIT else ["I", hex(v)]
        if isinstance(v, Remote):
            if v._conn is not self:
                raise TypeError("a handle of another solution")
            return ["r", v._id]
        for base in (int, float, str):
            if isinstance(v, base):
                return self.encode(base(v))
        if isinstance(v, dict):
            out = ["d"]
            for k, x in v.items():
                out.append(self.encode(k))
                out.append(self.encode(x))
            return out
        for base, tag in ((list, "l"), (tuple, "t"), (set, "S"), (frozenset, "F")):
            if isinstance(v, base):
                return [tag, *map(self.encode, v)]
        if isinstance(v, (bytes, bytearray)):
            return ["Y" if isinstance(v, bytearray) else "y", bytes(v).hex()]
        if isinstance(v, complex):
            return ["c", v.real, v.imag]
        raise TypeError(f"cannot pass a {type(v).__name__} to the solution's process "
                        "(only plain data and the solution's own objects)")

    def decode(self, x, *, modules=False):
        """A message from the solution as a value: plain builtin data or :class:`Remote` handles, strictly."""
        t = type(x)
        if x is None or t is bool or t is int or t is float or t is str:
            return x
        if t is not list or not x or type(x[0]) is not str:
            raise ProtocolError(f"the solution sent an invalid value ({t.__name__})")
        tag = x[0]
        try:
            if tag == "l":
                return [self.decode(i) for i in x[1:]]
            if tag == "t":
                return tuple([self.decode(i) for i in x[1:]])
            if tag == "d":
                if len(x) % 2 == 0:
                    raise ProtocolError("the solution sent an invalid dict")
                out = {}
                for i in range(1, len(x), 2):
                    out[self.decode(x[i])] = self.decode(x[i + 1])
                return out
            if tag == "S":
                return {self.decode(i) for i in x[1:]}
            if tag == "F":
                return frozenset([self.decode(i) for i in x[1:]])
            if len(x) == 2 and tag == "r" and type(x[1]) is int and x[1] > 0:
                return Remote(self, x[1])
            if len(x) == 2 and tag == "I" and type(x[1]) is str:
                return int(x[1], 16)
            if len(x) == 2 and tag in ("y", "Y") and type(x[1]) is str:
                return (bytes if tag == "y" else bytearray).fromhex(x[1])
            if len(x) == 3 and tag == "c" and all(type(p) in (int, float) for p in x[1:]):
                return complex(x[1], x[2])
            if modules and len(x) == 2 and tag == "m" and type(x[1]) is str:
                return _Module(x[1])
        except (TypeError, ValueError) as exc:  # unhashable keys, bad hex, ...
            raise ProtocolError(f"the solution sent an invalid value: {exc}") from None
        raise ProtocolError(f"the solution sent an invalid value (tag {tag[:20]!r})")

    # ---------------------------------------------------------------- requests
    def ready(self):
        if self._recv() != ["ready"]:
            raise ProtocolError("the solution's first message was not 'ready'")

    def request(self, *msg):
        self._send(list(msg))
        reply = self._recv()
        if type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            return self.decode(reply[1])
        if (type(reply) is list and len(reply) == 3 and reply[0] == "raise" and type(reply[1]) is list
                and reply[1] and all(type(n) is str for n in reply[1]) and type(reply[2]) is str):
            raise _exception(reply[1], reply[2][:2000])
        raise ProtocolError("the solution sent an invalid reply")

    def globals(self, names):
        """The solution's module-level values of ``names`` (those it defines)."""
        self._send(["globals", sorted(names)])
        reply = self._recv()
        if type(reply) is not list or len(reply) != 2 or reply[0] != "ok" or type(reply[1]) is not list:
            raise ProtocolError("the solution sent an invalid reply to 'globals'")
        flat, out = reply[1], {}
        if len(flat) % 2:
            raise ProtocolError("the solution sent an invalid reply to 'globals'")
        for i in range(0, len(flat), 2):
            name = flat[i]
            if type(name) is not str or name not in names:
                raise ProtocolError("the solution sent a name that was not asked for")
            value = self.decode(flat[i + 1], modules=True)
            if isinstance(value, _Module):
                value = value.load(name)
                if value is None:
                    continue
            out[name] = value
        return out


class _Module:
    def __init__(self, name):
        self.name = name

    def load(self, bound_as):
        """A standard library module the solution imported under its own name: the harness's own copy."""
        if self.name != bound_as or self.name not in getattr(sys, "stdlib_module_names", ()):
            return None
        import importlib

        try:
            return importlib.import_module(self.name)
        except ImportError:
            return None


def _exception(names, message):
    for i, name in enumerate(names):
        cls = _EXCEPTIONS.get(name)
        if cls is None:
            continue
        try:
            exc = cls(message if i == 0 else f"{names[0]}: {message}")
        except Exception:
            continue
        if isinstance(exc, Exception):
            return exc
    return SolutionError(f"{names[0][:100]}: {message}")


def _names(code):
    out = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            out |= _names(const)
    return out


_SOURCES = {}


def _compile(source, filename):
    _SOURCES[filename] = source
    return compile(source, filename, "exec")


def _print_failure():
    exc = sys.exc_info()[1]
    try:
        import linecache
        import traceback

        for name, source in _SOURCES.items():  # the tracebacks' source lines
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        traceback.print_exc()
    except BaseException:
        _say(f"{type(exc).__name__}: {exc}")


def run(rfd: int, wfd: int, job: dict) -> int:
    """Run ``job``'s tests against the solution at the other end of the pipes; the exit status (see above)."""
    conn = Conn(rfd, wfd)
    ns = {"__name__": "__main__", "__builtins__": builtins}
    try:
        try:
            if job.get("prelude"):
                exec(_compile(job["prelude"], "prompt.py"), ns)
            tests = _compile(job.get("tests") or "", "tests.py")
            expose = set(job.get("expose") or ())
            # the solution's names the tests use: what they expose, and names that neither the trusted
            # prelude nor the builtins define
            wanted = expose | {n for n in _names(tests) if n not in ns and not hasattr(builtins, n)}
            conn.ready()
            if wanted:
                found = conn.globals(wanted)
                for name in expose - set(found):
                    ns.pop(name, None)  # not the prelude's docstring-only stand-in: a NameError
                ns.update(found)
            exec(tests, ns)
        finally:
            for f in (sys.stdout, sys.stderr):
                try:
                    f.flush()
                except Exception:
                    pass
    except SolutionGone as exc:
        _say(exc)
        return 3
    except ProtocolError as exc:
        _say(exc)
        return 2
    except BaseException:
        _print_failure()
        return 1
    return 0


def _say(exc):
    try:
        os.write(2, f"luopan-harness: {exc}\n".encode("utf-8", "replace"))
    except OSError:
        pass
