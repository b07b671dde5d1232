"""Hashes through redis-py: a session store."""

from shoalpy import check, client, done, eq, raises
import redis

r = client()
k = "py:session:42"
r.delete(k)
eq(r.hset(k, mapping={"user": "ann", "cart": "3", "theme": "dark"}), 3, "HSET mapping")
eq(r.hset(k, "theme", "light"), 0, "HSET existing field")
eq(r.hget(k, "theme"), "light", "HGET")
eq(r.hgetall(k), {"user": "ann", "cart": "3", "theme": "light"}, "HGETALL")
eq(r.hmget(k, ["user", "none", "cart"]), ["ann", None, "3"], "HMGET")
eq(r.hlen(k), 3, "HLEN")
eq(r.hexists(k, "user"), True, "HEXISTS")
eq(r.hexists(k, "none"), False, "HEXISTS missing")
eq(r.hincrby(k, "cart", 2), 5, "HINCRBY")
eq(r.hincrbyfloat(k, "spent", 9.5), 9.5, "HINCRBYFLOAT")
eq(r.hsetnx(k, "user", "bob"), False, "HSETNX existing")
eq(r.hsetnx(k, "lang", "en"), True, "HSETNX new")
eq(r.hstrlen(k, "user"), 3, "HSTRLEN")
eq(sorted(r.hkeys(k)), ["cart", "lang", "spent", "theme", "user"], "HKEYS")
eq(sorted(r.hvals(k)), ["5", "9.5", "ann", "en", "light"], "HVALS")
eq(r.hdel(k, "lang", "none"), 1, "HDEL")
pick = r.hrandfield(k, 2, withvalues=True)
eq(len(pick), 4, "HRANDFIELD 2 WITHVALUES length")
eq(r.hget(k, pick[0]), pick[1], "HRANDFIELD pair")
eq(r.type(k), "hash", "TYPE")
raises(redis.ResponseError, lambda: r.get(k), "GET on a hash", "WRONGTYPE")
raises(redis.ResponseError, lambda: r.hincrby(k, "user", 1), "HINCRBY on text",
       "not an integer")
eq(r.expire(k, 100), True, "EXPIRE on a hash")
ttl = r.ttl(k)
check(90 <= ttl <= 100, f"TTL on a hash: {ttl}")
eq(r.delete(k), 1, "DEL")
eq(r.hgetall(k), {}, "HGETALL after DEL")
done()
