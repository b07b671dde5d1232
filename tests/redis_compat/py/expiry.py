"""Expiry on every type through redis-py."""

import time

from shoalpy import check, client, done, eq

r = client()
p = "py:ttl:"
r.set(p + "s", "v")
r.hset(p + "h", "f", "v")
r.rpush(p + "l", "x")
r.sadd(p + "st", "m")
r.zadd(p + "z", {"m": 1})
r.setbit(p + "b", 3, 1)
keys = [p + k for k in ("s", "h", "l", "st", "z", "b")]
for k in keys:
    eq(r.ttl(k), -1, f"TTL of {k} without expiry")
    eq(r.pexpire(k, 300), True, f"PEXPIRE {k}")
    check(0 < r.pttl(k) <= 300, f"PTTL of {k}: {r.pttl(k)}")
eq(r.ttl(p + "none"), -2, "TTL of a missing key")
deadline = time.time() + 10
while any(r.exists(k) for k in keys) and time.time() < deadline:
    time.sleep(0.05)
for k in keys:
    eq(r.exists(k), 0, f"{k} expired")
# A new value under an expired collection's name starts empty.
eq(r.sadd(p + "st", "fresh"), 1, "SADD after expiry")
eq(r.smembers(p + "st"), {"fresh"}, "SMEMBERS after expiry")
eq(r.ttl(p + "st"), -1, "no TTL carried over")
# SET EX / SETEX / GETEX / PERSIST / EXPIRE options / EXPIRETIME.
eq(r.set(p + "ex", "v", ex=100), True, "SET EX")
check(r.ttl(p + "ex") in (99, 100), "TTL after SET EX")
eq(r.setex(p + "setex", 50, "v"), True, "SETEX")
check(r.ttl(p + "setex") in (49, 50), "TTL after SETEX")
eq(r.psetex(p + "psetex", 5000, "v"), True, "PSETEX")
check(4000 < r.pttl(p + "psetex") <= 5000, "PTTL after PSETEX")
eq(r.getex(p + "ex", persist=True), "v", "GETEX PERSIST")
eq(r.ttl(p + "ex"), -1, "TTL after GETEX PERSIST")
eq(r.expire(p + "setex", 10, gt=True), False, "EXPIRE GT lower")
eq(r.expire(p + "setex", 500, gt=True), True, "EXPIRE GT higher")
eq(r.expire(p + "ex", 10, xx=True), False, "EXPIRE XX without a TTL")
eq(r.expire(p + "ex", 10, nx=True), True, "EXPIRE NX without a TTL")
eq(r.persist(p + "ex"), True, "PERSIST")
at = int(time.time()) + 1000
eq(r.expireat(p + "ex", at), True, "EXPIREAT")
eq(r.execute_command("EXPIRETIME", p + "ex"), at, "EXPIRETIME")
eq(r.execute_command("PEXPIRETIME", p + "ex"), at * 1000, "PEXPIRETIME")
r.delete(p + "ex", p + "setex", p + "psetex", p + "st")
done()
