"""Real lock libraries against running Strongbox servers, unchanged.

  python3 lock_libraries_check.py redis-py PORT PROTOCOL PARSER   (PROTOCOL 2|3, PARSER hiredis|python)
  python3 lock_libraries_check.py pottery PORT PORT PORT
  python3 lock_libraries_check.py shop PORT

Exits non-zero with a message on the first failed check; prints "all checks passed" at the end.
"""
import sys
import threading
import time
import uuid

import redis
from redis.exceptions import LockError, LockNotOwnedError


def check(what, ok):
    if not ok:
        sys.exit(f"check failed: {what}")


def client(port, protocol=3, parser="python"):
    if parser == "hiredis":
        check("hiredis is importable", redis.utils.HIREDIS_AVAILABLE)
        parser_class = redis._parsers._HiredisParser
    else:
        parser_class = redis._parsers._RESP3Parser if protocol == 3 else redis._parsers._RESP2Parser
    pool = redis.ConnectionPool(host="127.0.0.1", port=port, protocol=protocol, parser_class=parser_class)
    return redis.Redis(connection_pool=pool)


def redis_py(port, protocol, parser):
    r = client(port, protocol, parser)
    name = f"lock:{uuid.uuid4().hex}"
    lock = r.lock(name, timeout=5)
    check("acquire", lock.acquire(blocking=False))
    check("owned", lock.owned())
    check("locked", lock.locked())
    ttl = r.pttl(name)
    check(f"ttl after acquire ({ttl})", 4000 < ttl <= 5000)

    # A second owner cannot take it, and a blocking acquire times out.
    other = r.lock(name, timeout=5)
    check("second acquire fails", not other.acquire(blocking=False))
    start = time.monotonic()
    check("blocking acquire times out", not other.acquire(blocking=True, blocking_timeout=0.3))
    check("waited about the timeout", 0.15 < time.monotonic() - start < 2)

    # extend adds time; reacquire resets it.
    check("extend", lock.extend(10))
    ttl = r.pttl(name)
    check(f"ttl after extend ({ttl})", 14000 < ttl <= 15000)
    check("extend replace_ttl", lock.extend(3, replace_ttl=True))
    ttl = r.pttl(name)
    check(f"ttl after replace ({ttl})", 2000 < ttl <= 3000)
    check("reacquire", lock.reacquire())
    ttl = r.pttl(name)
    check(f"ttl after reacquire ({ttl})", 4000 < ttl <= 5000)

    # Releasing someone else's lock raises LockNotOwnedError and leaves it.
    impostor = r.lock(name, timeout=5)
    impostor.local.token = b"not-the-token"
    try:
        impostor.release()
        sys.exit("releasing a foreign lock did not raise")
    except LockNotOwnedError:
        pass
    check("still locked after foreign release", r.get(name) is not None)
    lock.release()
    check("released", r.get(name) is None)
    try:
        lock.release()
        sys.exit("releasing an unlocked lock did not raise")
    except LockError:
        pass

    # A lock that expired and was taken by another is not released by its first owner.
    short = r.lock(name, timeout=0.2)
    check("short acquire", short.acquire(blocking=False))
    stale = r.lock(name, timeout=0.2)
    stale.local.token = short.local.token  # a second handle on the same, soon expired, lease
    time.sleep(0.35)
    taker = r.lock(name, timeout=5)
    check("taken after expiry", taker.acquire(blocking=False))
    try:
        short.release()
        sys.exit("expired owner released the new owner's lock")
    except LockNotOwnedError:
        pass
    check("new owner keeps it", taker.owned())
    try:
        stale.extend(1)
        sys.exit("expired owner extended the new owner's lock")
    except LockNotOwnedError:
        pass
    try:
        stale.reacquire()
        sys.exit("expired owner reacquired the new owner's lock")
    except LockNotOwnedError:
        pass
    check("new owner still keeps it", taker.owned())
    taker.release()

    # Blocking acquire succeeds once the holder lets go; the context manager releases.
    holder = r.lock(name, timeout=5, thread_local=False)  # released from a timer thread
    check("holder acquires", holder.acquire(blocking=False))
    threading.Timer(0.2, holder.release).start()
    waiter = r.lock(name, timeout=5, blocking_timeout=3)
    start = time.monotonic()
    with waiter:
        check("waiter got it after release", 0.1 < time.monotonic() - start < 2.5)
        check("waiter owns it", waiter.owned())
    check("context manager released", r.get(name) is None)


def eventually(probe, tries=5):
    """pottery's locked() asks every master within a short time budget; on a loaded 2-core
    test machine one answer can miss it, so give the property a few chances."""
    for _ in range(tries):
        if probe():
            return True
        time.sleep(0.05)
    return False


def pottery_redlock(ports):
    from pottery import Redlock
    masters = {redis.Redis(host="127.0.0.1", port=p) for p in ports}
    key = f"pottery:{uuid.uuid4().hex}"
    lock = Redlock(key=key, masters=masters, auto_release_time=5)
    check("redlock acquire", lock.acquire(blocking=False))
    check("redlock locked", eventually(lambda: lock.locked() > 0))
    other = Redlock(key=key, masters=masters, auto_release_time=5)
    check("second redlock fails", not other.acquire(blocking=False))
    check("redlock extend", lock.extend() is None)
    lock.release()
    check("redlock released", lock.locked() == 0)
    with Redlock(key=key, masters=masters, auto_release_time=5) as held:
        check("context manager holds", eventually(lambda: held.locked() > 0))
        check("others cannot take it", not other.acquire(blocking=False))
    check("context manager released", other.acquire(blocking=False))
    other.release()


def shop(port):
    """The classic flash-sale pattern: a redis-py Lock guards stock, StrictRedis caches products."""
    r = redis.StrictRedis(host="127.0.0.1", port=port, decode_responses=True)
    database = {"stock": 20, "orders": [], "price": "19.99"}

    def product_price():
        cached = r.get("product:1:price")
        if cached is not None:
            return cached
        r.set("product:1:price", database["price"], ex=60)
        return database["price"]

    def buy(customer):
        with r.lock("lock:product:1", timeout=5, blocking_timeout=10):
            if database["stock"] <= 0:
                return False
            stock = database["stock"]
            time.sleep(0.001)  # the read-modify-write the lock protects
            database["stock"] = stock - 1
            database["orders"].append(customer)
            return True

    check("price from the database", product_price() == "19.99")
    check("price from the cache", r.get("product:1:price") == "19.99")
    results = []
    threads = [threading.Thread(target=lambda c=c: results.append(buy(c))) for c in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(f"sold exactly the stock ({results.count(True)})", results.count(True) == 20)
    check("no oversell", database["stock"] == 0 and len(database["orders"]) == 20)
    check("no duplicate orders", len(set(database["orders"])) == 20)
    # A price change invalidates the cache.
    database["price"] = "24.99"
    r.delete("product:1:price")
    check("fresh price after invalidation", product_price() == "24.99")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "redis-py":
        redis_py(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif mode == "pottery":
        pottery_redlock([int(p) for p in sys.argv[2:5]])
    elif mode == "shop":
        shop(int(sys.argv[2]))
    else:
        sys.exit(f"unknown mode {mode}")
    print("all checks passed")
