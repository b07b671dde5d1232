"""Strings and counters through redis-py."""

from shoalpy import client, done, eq, raises
import redis

r = client()
p = "py:str:"
eq(r.ping(), True, "PING")
eq(r.set(p + "a", "hello"), True, "SET")
eq(r.get(p + "a"), "hello", "GET")
eq(r.append(p + "a", " world"), 11, "APPEND")
eq(r.strlen(p + "a"), 11, "STRLEN")
eq(r.getrange(p + "a", 0, 4), "hello", "GETRANGE")
eq(r.setrange(p + "a", 6, "WORLD"), 11, "SETRANGE")
eq(r.get(p + "a"), "hello WORLD", "GET after SETRANGE")
eq(r.set(p + "a", "x", nx=True), None, "SET NX on an existing key")
eq(r.set(p + "new", "x", xx=True), None, "SET XX on a missing key")
eq(r.set(p + "a", "v2", get=True), "hello WORLD", "SET GET")
eq(r.getset(p + "a", "v3"), "v2", "GETSET")
eq(r.getdel(p + "a"), "v3", "GETDEL")
eq(r.get(p + "a"), None, "GET after GETDEL")
eq(r.incr(p + "n"), 1, "INCR")
eq(r.incrby(p + "n", 41), 42, "INCRBY")
eq(r.decrby(p + "n", 2), 40, "DECRBY")
eq(r.incrbyfloat(p + "f", 1.5), 1.5, "INCRBYFLOAT")
eq(r.incrbyfloat(p + "f", 0.25), 1.75, "INCRBYFLOAT again")
r.set(p + "s", "abc")
raises(redis.ResponseError, lambda: r.incr(p + "s"), "INCR on text",
       "not an integer")
# MSET over keys on different shards is one transaction.
keys = {f"{p}m{i}": str(i) for i in range(10)}
eq(r.mset(keys), True, "MSET")
eq(r.mget(list(keys) + [p + "none"]), [str(i) for i in range(10)] + [None], "MGET")
eq(r.msetnx({p + "m0": "x", p + "fresh": "y"}), False, "MSETNX with an existing key")
eq(r.exists(p + "fresh"), 0, "MSETNX set nothing")
eq(r.setnx(p + "fresh", "y"), True, "SETNX")
eq(r.type(p + "fresh"), "string", "TYPE")
eq(r.copy(p + "fresh", p + "copy"), True, "COPY")
eq(r.rename(p + "copy", p + "renamed"), True, "RENAME")
eq(r.get(p + "renamed"), "y", "GET after RENAME")
eq(r.renamenx(p + "renamed", p + "fresh"), False, "RENAMENX onto an existing key")
eq(r.delete(*keys, p + "fresh", p + "renamed", p + "n", p + "f", p + "s"), 15, "DEL")
# Binary values come back unchanged.
b = client(decode_responses=False)
blob = bytes(range(256)) * 4
b.set(p + "bin", blob)
eq(b.get(p + "bin"), blob, "binary value")
eq(b.delete(p + "bin"), 1, "DEL binary")
done()
