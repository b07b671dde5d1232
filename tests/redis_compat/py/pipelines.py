"""Pipelines, MULTI/EXEC (pipeline(transaction=True)) and WATCH (the
transaction() helper) through redis-py, over keys on several shards."""

import threading

import redis

from shoalpy import check, client, done, eq, raises

r = client()
p = "py:pipe:"

# A plain pipeline: 500 commands of every type in one round trip.
pipe = r.pipeline(transaction=False)
for i in range(100):
    pipe.set(f"{p}s{i}", i)
    pipe.hset(f"{p}h{i % 10}", f"f{i}", i)
    pipe.rpush(f"{p}l{i % 10}", i)
    pipe.sadd(f"{p}st{i % 10}", i)
    pipe.zadd(f"{p}z{i % 10}", {f"m{i}": i})
replies = pipe.execute()
eq(len(replies), 500, "pipeline replies")
eq(replies[:5], [True, 1, 1, 1, 1], "first replies")
eq(r.hlen(p + "h3"), 10, "HLEN after the pipeline")
eq(r.lrange(p + "l3", 0, 2), ["3", "13", "23"], "list order after the pipeline")
eq(r.zrange(p + "z3", -1, -1), ["m93"], "ZRANGE after the pipeline")
# Errors in a plain pipeline come back in their place.
pipe = r.pipeline(transaction=False)
pipe.set(p + "str", "v").lpush(p + "str", "x").get(p + "str")
got = pipe.execute(raise_on_error=False)
eq(got[0], True, "SET in pipeline")
check(isinstance(got[1], redis.ResponseError) and "WRONGTYPE" in str(got[1]),
      f"LPUSH on a string in a pipeline: {got[1]!r}")
eq(got[2], "v", "GET after the error")

# MULTI/EXEC over keys on several shards: all replies at once.
with r.pipeline(transaction=True) as t:
    t.hset(p + "acct:1", "balance", 100)
    t.hset(p + "acct:2", "balance", 0)
    t.sadd(p + "accts", "1", "2")
    t.zadd(p + "rich", {"1": 100})
    t.rpush(p + "log", "open")
    t.hgetall(p + "acct:1")
    eq(t.execute(), [1, 1, 2, 1, 1, {"balance": "100"}], "MULTI/EXEC")
# A command error queued in MULTI aborts the whole transaction.
with r.pipeline(transaction=True) as t:
    t.set(p + "never", "v")
    t.execute_command("HSET", p + "never2")
    # redis-py raises the queued command's error (EXEC said EXECABORT).
    raises(redis.ResponseError, t.execute, "MULTI with a bad command",
           "wrong number of arguments")
eq(r.exists(p + "never"), 0, "nothing of an aborted MULTI applied")


# WATCH through transaction(): two threads each move 1 from one hash to
# another (on a different shard) 50 times, reading the balances and writing
# new ones; a lost update would leave money behind.
def transfer(src, dst, amount):
    def move(pipe):
        # Read, then write absolute values: without WATCH, concurrent
        # transfers would lose updates.
        a = int(pipe.hget(src, "balance"))
        b = int(pipe.hget(dst, "balance"))
        pipe.multi()
        pipe.hset(src, "balance", a - amount)
        pipe.hset(dst, "balance", b + amount)
        pipe.rpush(p + "log", f"{src}->{dst}")
    r.transaction(move, src, dst)


errors = []


def worker(src, dst):
    try:
        for _ in range(50):
            transfer(src, dst, 1)
    except Exception as e:  # reported by the main thread
        errors.append(repr(e))


ts = [threading.Thread(target=worker, args=(p + "acct:1", p + "acct:2"))
      for _ in range(2)]
for t in ts:
    t.start()
for t in ts:
    t.join()
eq(errors, [], "transfer threads")
eq([r.hget(p + "acct:1", "balance"), r.hget(p + "acct:2", "balance")], ["0", "100"],
   "balances after 100 watched transfers")
eq(r.llen(p + "log"), 101, "one log entry per transfer")
# A write by another client between WATCH and EXEC aborts it.
with r.pipeline(transaction=True) as t:
    t.watch(p + "acct:1")
    t.multi()
    t.hset(p + "acct:1", "balance", 5)
    client().hset(p + "acct:1", "owner", "ann")
    raises(redis.WatchError, t.execute, "EXEC after a watched key changed")
eq(r.hget(p + "acct:1", "balance"), "0", "the aborted HSET did not apply")
r.delete(*[k for k in r.scan_iter(p + "*")])
done()
