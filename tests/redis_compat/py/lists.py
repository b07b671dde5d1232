"""Lists through redis-py."""

from shoalpy import client, done, eq, raises
import redis

r = client()
k = "py:list"
r.delete(k, "{py:l}src", "{py:l}dst")
eq(r.rpush(k, "b", "c"), 2, "RPUSH")
eq(r.lpush(k, "a"), 3, "LPUSH")
eq(r.lrange(k, 0, -1), ["a", "b", "c"], "LRANGE")
eq(r.llen(k), 3, "LLEN")
eq(r.lindex(k, -1), "c", "LINDEX")
eq(r.lset(k, 1, "B"), True, "LSET")
eq(r.linsert(k, "before", "B", "x"), 4, "LINSERT")
eq(r.lrange(k, 0, -1), ["a", "x", "B", "c"], "LRANGE after LINSERT")
r.rpush(k, "x", "x")
eq(r.lpos(k, "x"), 1, "LPOS")
eq(r.lpos(k, "x", count=0), [1, 4, 5], "LPOS COUNT 0")
eq(r.lrem(k, 2, "x"), 2, "LREM")
eq(r.lrange(k, 0, -1), ["a", "B", "c", "x"], "LRANGE after LREM")
eq(r.ltrim(k, 1, 2), True, "LTRIM")
eq(r.lrange(k, 0, -1), ["B", "c"], "LRANGE after LTRIM")
eq(r.lpushx("py:nolist", "v"), 0, "LPUSHX on a missing key")
eq(r.rpushx(k, "d"), 3, "RPUSHX")
eq(r.lpop(k), "B", "LPOP")
eq(r.rpop(k, 2), ["d", "c"], "RPOP count")
eq(r.exists(k), 0, "the empty list is gone")
r.rpush("{py:l}src", 1, 2, 3)
eq(r.lmove("{py:l}src", "{py:l}dst", "LEFT", "RIGHT"), "1", "LMOVE")
eq(r.rpoplpush("{py:l}src", "{py:l}dst"), "3", "RPOPLPUSH")
eq(r.lrange("{py:l}dst", 0, -1), ["3", "1"], "LRANGE dst")
eq(r.lmpop(2, "{py:l}none", "{py:l}src", direction="LEFT"), ["{py:l}src", ["2"]], "LMPOP")
eq(r.blpop(["{py:l}dst"], timeout=1), ("{py:l}dst", "3"), "BLPOP with data")
eq(r.blpop(["{py:l}none"], timeout=0.2), None, "BLPOP timeout")
r.set("py:notlist", "v")
raises(redis.ResponseError, lambda: r.lpush("py:notlist", "x"), "LPUSH on a string",
       "WRONGTYPE")
raises(redis.ResponseError, lambda: r.lset("{py:l}dst", 5, "x"), "LSET out of range",
       "index out of range")
r.delete("py:notlist", "{py:l}dst")
done()
