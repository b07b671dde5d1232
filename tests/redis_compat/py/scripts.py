"""Scripts through redis-py on two routers: register_script (EVALSHA with
EVAL on NOSCRIPT), redis-py's own Lock (its acquire, release and extend are
Lua scripts), functions loaded on one router and called on the other, and
a read-modify-write script racing from eight threads."""

import threading

import redis
from shoalpy import client, done, eq, raises

a = client(1)
b = client(2)
a.delete("py:s:{x}", "py:s:{x}:n", "py:lock", "py:rmw")

# register_script: the first call meets NOSCRIPT on router B and sends
# EVAL, as redis-py does; later calls go by EVALSHA.
add = b.register_script(
    "redis.call('SET', KEYS[1], ARGV[1]) "
    "return redis.call('INCRBY', KEYS[2], ARGV[2])")
eq(add(keys=["py:s:{x}", "py:s:{x}:n"], args=["v", 5]), 5, "first call")
eq(add(keys=["py:s:{x}", "py:s:{x}:n"], args=["w", 2]), 7, "second call")
eq(a.get("py:s:{x}"), "w", "the script's SET, read on router A")
eq(b.script_exists(add.sha), [True], "EVAL cached the script on router B")
raises(redis.exceptions.ResponseError,
       lambda: a.eval("return 1", 2, "py:s:{x}", "py:other"),
       "keys on two shards", "CROSSSLOT")

# SCRIPT LOAD on A is known on B.
sha = a.script_load("return redis.call('GET', KEYS[1])")
eq(b.evalsha(sha, 1, "py:s:{x}"), "w", "EVALSHA on the other router")

# redis-py's Lock: two clients on two routers, never both holding it.
la = a.lock("py:lock", timeout=5, blocking_timeout=5)
lb = b.lock("py:lock", timeout=5, blocking_timeout=0.2)
eq(la.acquire(), True, "A acquires")
eq(lb.acquire(), False, "B cannot while A holds it")
eq(la.extend(5), True, "A extends (a script)")
la.release()
eq(lb.acquire(), True, "B acquires after A released")
raises(redis.exceptions.LockError, la.release, "A releases B's lock",
       "Cannot release")
eq(b.get("py:lock") is not None, True, "B still holds it")
lb.release()

# Functions: loaded through A, called through B.
a.function_flush()
eq(a.function_load(
    "#!lua name=pylib\n"
    "redis.register_function('hello', function(keys, args) "
    "return 'hello ' .. args[1] end)\n"
    "redis.register_function{function_name='peek', flags={'no-writes'}, "
    "callback=function(keys) return redis.call('GET', keys[1]) end}"),
    "pylib", "FUNCTION LOAD")
eq(b.fcall("hello", 0, "py"), "hello py", "FCALL on the other router")
eq(b.fcall_ro("peek", 1, "py:s:{x}"), "w", "FCALL_RO")
# redis-py 4.3 hands FUNCTION LIST back as RESP2 flat lists.
libs = b.function_list()
eq([dict(zip(lib[::2], lib[1::2]))["library_name"] for lib in libs],
   ["pylib"], "FUNCTION LIST")
a.function_delete("pylib")

# Eight threads add 1 a hundred times each through a read-modify-write
# script: nothing is lost.
rmw = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') " \
      "redis.call('SET', KEYS[1], v + 1) return v + 1"
errors = []


def worker(c):
    s = c.register_script(rmw)
    try:
        for _ in range(100):
            s(keys=["py:rmw"])
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(e)


threads = [threading.Thread(target=worker, args=(a if i % 2 else b,))
           for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
eq(errors, [], "script errors")
eq(a.get("py:rmw"), "800", "no update lost")
done()
