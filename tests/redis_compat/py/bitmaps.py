"""Bitmaps through redis-py: daily active users, one bit per user id."""

from shoalpy import client, done, eq, raises
import redis

r = client()
mon, tue = "{py:dau}mon", "{py:dau}tue"
r.delete(mon, tue, "{py:dau}both", "{py:dau}any")
for uid in (1, 5, 9, 100):
    eq(r.setbit(mon, uid, 1), 0, f"SETBIT mon {uid}")
for uid in (5, 9, 2000):
    r.setbit(tue, uid, 1)
eq(r.setbit(mon, 5, 1), 1, "SETBIT returns the old bit")
eq(r.getbit(mon, 5), 1, "GETBIT set")
eq(r.getbit(mon, 6), 0, "GETBIT clear")
eq(r.getbit(mon, 10**6), 0, "GETBIT past the end")
eq(r.bitcount(mon), 4, "BITCOUNT")
eq(r.bitcount(mon, 0, 0), 2, "BITCOUNT byte range")
eq(r.bitpos(mon, 1), 1, "BITPOS 1")
eq(r.bitpos(mon, 0), 0, "BITPOS 0")
eq(r.bitop("AND", "{py:dau}both", mon, tue), 251, "BITOP AND length")
eq(r.bitcount("{py:dau}both"), 2, "users active both days")
r.bitop("OR", "{py:dau}any", mon, tue)
eq(r.bitcount("{py:dau}any"), 5, "users active either day")
eq(r.strlen(tue), 251, "STRLEN of a bitmap")
b = client(decode_responses=False)
eq(b.get(mon)[:2], bytes([0b01000100, 0b01000000]), "bitmap bytes")
# redis-py turns any true value into 1: send the 2 as it is.
raises(redis.ResponseError, lambda: r.execute_command("SETBIT", mon, 1, 2), "SETBIT 2",
       "bit is not an integer or out of range")
raises(redis.ResponseError, lambda: r.setbit(mon, -1, 1), "SETBIT -1",
       "bit offset is not an integer or out of range")
r.delete(mon, tue, "{py:dau}both", "{py:dau}any")
done()
