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
    # 2 s: a loaded machine may stall between PEXPIRE and PTTL.
    eq(r.pexpire(k, 2000), True, f"PEXPIRE {k}")
    left = r.pttl(k)
    check(0 < left <= 2000, f"PTTL of {k}: {left}")
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
# Ranges, not exact values: seconds pass on a loaded machine.
ttl = r.ttl(p + "ex")
check(90 <= ttl <= 100, f"TTL after SET EX: {ttl}")
eq(r.setex(p + "setex", 50, "v"), True, "SETEX")
ttl = r.ttl(p + "setex")
check(40 <= ttl <= 50, f"TTL after SETEX: {ttl}")
eq(r.psetex(p + "psetex", 5000, "v"), True, "PSETEX")
left = r.pttl(p + "psetex")
check(0 < left <= 5000, f"PTTL after PSETEX: {left}")
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
