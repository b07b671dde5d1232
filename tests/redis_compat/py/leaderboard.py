"""A leaderboard: ZADD, ZINCRBY, ZRANGE ... REV WITHSCORES, ZREVRANK, with
concurrent score updates from several clients."""

import threading

from shoalpy import client, done, eq

r = client()
board = "py:board"
r.delete(board)
eq(r.zadd(board, {"ann": 30, "bob": 10, "cid": 20, "dee": 40}), 4, "ZADD")
eq(r.zincrby(board, 25, "bob"), 35.0, "ZINCRBY")
# redis-py sends ZREVRANGE for desc=True without BYSCORE/LIMIT ...
eq(r.zrange(board, 0, 2, desc=True, withscores=True),
   [("dee", 40.0), ("bob", 35.0), ("ann", 30.0)], "top three (ZREVRANGE)")
# ... and ZRANGE ... REV otherwise; this asks for ZRANGE ... REV directly.
eq(r.execute_command("ZRANGE", board, 0, 2, "REV", "WITHSCORES"),
   ["dee", "40", "bob", "35", "ann", "30"], "top three (ZRANGE REV)")
eq(r.zrange(board, "+inf", 31, byscore=True, desc=True, withscores=True),
   [("dee", 40.0), ("bob", 35.0)], "ZRANGE BYSCORE REV")
eq(r.zrevrank(board, "cid"), 3, "ZREVRANK")
eq(r.zrevrank(board, "nobody"), None, "ZREVRANK of a stranger")
eq(r.zscore(board, "bob"), 35.0, "ZSCORE")

# Eight clients each add 1 to every player 25 times: no increment is lost.
players = [f"p{i}" for i in range(10)]
r.zadd(board, {p: 0 for p in players})
errors = []


def play():
    try:
        c = client()
        for _ in range(25):
            for p in players:
                c.zincrby(board, 1, p)
    except Exception as e:
        errors.append(repr(e))


ts = [threading.Thread(target=play) for _ in range(8)]
for t in ts:
    t.start()
for t in ts:
    t.join()
eq(errors, [], "errors")
eq(r.zmscore(board, players), [200.0] * 10, "scores after concurrent ZINCRBY")
eq(r.zrange(board, 0, 1, desc=True), ["p9", "p8"], "ties broken by member, reversed")
eq(r.zrevrank(board, "dee"), 10, "rank below the tied players")
r.delete(board)
done()
