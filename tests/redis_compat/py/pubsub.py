"""redis-py PubSub across routers: subscribers on routers A1 and A2, a
publisher on router P. After half the messages the script prints HALF and
waits for a line on stdin (the test kills router A1 meanwhile). A2's
subscriber must receive every message once, in order; A1's must see its
connection end (not stay silent), having received an in-order prefix.
Prints "ok" on success; exits non-zero with a message otherwise.

usage: pubsub.py A1 A2 P N
"""
import sys
import threading
import time

import redis


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


a1, a2, pub_addr, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
got = {"a1": [], "a2": []}
ended = {}
ready = {"a1": threading.Event(), "a2": threading.Event()}


def listen(name, addr):
    p = conn(addr).pubsub()
    p.subscribe("feed")
    try:
        first = p.get_message(timeout=10)
        if not first or first["type"] != "subscribe":
            ended[name] = "no subscribe confirmation: %r" % (first,)
            ready[name].set()
            return
        ready[name].set()
        while True:
            m = p.get_message(timeout=20)
            if m is None:
                ended[name] = "silent"
                return
            if m["type"] != "message" or m["channel"] != b"feed":
                ended[name] = "unexpected %r" % (m,)
                return
            got[name].append(int(m["data"]))
            if len(got[name]) == n:
                ended[name] = "done"
                return
    except redis.ConnectionError:
        ended[name] = "closed"


threads = [threading.Thread(target=listen, args=(k, a)) for k, a in (("a1", a1), ("a2", a2))]
for t in threads:
    t.start()
for e in ready.values():
    if not e.wait(15):
        fail("a subscriber did not start")
for k in ("a1", "a2"):
    if k in ended:
        fail("%s: %s" % (k, ended[k]))

p = conn(pub_addr)
counts = p.execute_command("PUBSUB", "NUMSUB", "feed")
if counts != [b"feed", 2]:
    fail("PUBSUB NUMSUB feed: %r" % (counts,))
started = time.monotonic()
i = 0
while i < n:
    pipe = p.pipeline(transaction=False)
    for j in range(i, min(i + 100, n)):
        pipe.publish("feed", str(j))
    for r in pipe.execute():
        if r < 1:
            fail("PUBLISH reached %r clients" % (r,))
    i = min(i + 100, n)
    if i == n // 2:
        print("HALF", flush=True)
        sys.stdin.readline()

for t in threads:
    t.join(60)
print("%d messages published and received in %.2f s (pause for the kill included)"
      % (n, time.monotonic() - started), file=sys.stderr)
if ended.get("a2") != "done":
    fail("a2: %s after %d messages" % (ended.get("a2"), len(got["a2"])))
if got["a2"] != list(range(n)):
    fail("a2: messages duplicated, lost or out of order")
if ended.get("a1") != "closed":
    fail("a1 (router killed): %s after %d messages" % (ended.get("a1"), len(got["a1"])))
if got["a1"] != list(range(len(got["a1"]))):
    fail("a1: messages duplicated or out of order before the kill")
print("ok")
