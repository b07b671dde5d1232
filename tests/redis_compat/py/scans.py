"""scan_iter / hscan_iter / sscan_iter / zscan_iter through redis-py: every
element exactly once, across pages and shards."""

from shoalpy import client, done, eq

r = client()
p = "py:scan:"
pipe = r.pipeline(transaction=False)
for i in range(300):
    pipe.set(f"{p}k{i}", i)
pipe.hset(p + "h", mapping={f"f{i}": i for i in range(250)})
pipe.sadd(p + "s", *[f"m{i}" for i in range(250)])
pipe.zadd(p + "z", {f"m{i}": i for i in range(250)})
pipe.execute()

keys = list(r.scan_iter(p + "k*", count=37))
eq(len(keys), 300, "scan_iter count (duplicates included)")
eq(set(keys), {f"{p}k{i}" for i in range(300)}, "scan_iter keys")
eq(set(r.scan_iter(p + "*", _type="hash")), {p + "h"}, "scan_iter TYPE hash")
eq(set(r.scan_iter(p + "*", _type="zset")), {p + "z"}, "scan_iter TYPE zset")
fields = list(r.hscan_iter(p + "h", count=20))
eq(len(fields), 250, "hscan_iter count")
eq(dict(fields), {f"f{i}": str(i) for i in range(250)}, "hscan_iter pairs")
eq(list(r.hscan_iter(p + "h", match="f24?")),
   [(f"f24{i}", f"24{i}") for i in range(10)], "hscan_iter MATCH")
members = list(r.sscan_iter(p + "s", count=30))
eq(len(members), 250, "sscan_iter count")
eq(set(members), {f"m{i}" for i in range(250)}, "sscan_iter members")
scored = list(r.zscan_iter(p + "z", count=25))
eq(len(scored), 250, "zscan_iter count")
eq(dict(scored), {f"m{i}": float(i) for i in range(250)}, "zscan_iter scores")
eq(r.delete(*keys, p + "h", p + "s", p + "z"), 303, "DEL")
done()
