"""Shared by the redis-py scripts that tests/python_client.rs runs against a
router: connect to the address given on the command line, and check values
so that a mismatch ends the script with a clear message and a non-zero exit.
"""

import sys

import redis


def client(arg=1, **kw):
    """A redis-py client for the router named by sys.argv[arg] (host:port)."""
    try:
        host, port = sys.argv[arg].rsplit(":", 1)
    except (IndexError, ValueError):
        fail(f"usage: {sys.argv[0]} HOST:PORT [HOST:PORT]")
    kw.setdefault("decode_responses", True)
    kw.setdefault("socket_timeout", 60)
    return redis.Redis(host=host, port=int(port), **kw)


def fail(msg):
    """Exit with status 1 and `msg` on stderr."""
    sys.exit(f"{sys.argv[0]}: {msg}")


def eq(got, want, what):
    """`got` must equal `want`; `what` says which check failed."""
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def check(cond, what):
    if not cond:
        fail(what)


def raises(exc, fn, what, contains=""):
    """`fn()` must raise `exc` whose text contains `contains`."""
    try:
        got = fn()
    except exc as e:
        if contains not in str(e):
            fail(f"{what}: error {str(e)!r} lacks {contains!r}")
        return
    fail(f"{what}: no {exc.__name__}, got {got!r}")


def done():
    print("ok")
