"""Real libraries that need MULTI/EXEC and WATCH, against a running Strongbox.

Usage: python3 transactions_check.py PORT [redis-py|dogpile|aiocache|django]...
Exits non-zero with a message on the first mismatch.
"""
import asyncio
import sys
import threading

import redis


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def redis_py(port):
    for protocol in (2, 3):
        r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, decode_responses=True)
        p = f"tx{protocol}:"
        r.delete(p + "a", p + "b", p + "n", p + "counter")
        pipe = r.pipeline(transaction=True)
        pipe.set(p + "a", "1").incr(p + "n").incr(p + "n").mget(p + "a", p + "n").get(p + "missing")
        check("pipeline(transaction=True)", pipe.execute(), [True, 1, 2, ["1", "2"], None])
        # A runtime error inside EXEC does not stop the others.
        pipe = r.pipeline(transaction=True)
        pipe.set(p + "b", "x").incr(p + "b").set(p + "b", "y")
        replies = pipe.execute(raise_on_error=False)
        check("exec with an error: first", replies[0], True)
        check("exec with an error: middle", isinstance(replies[1], redis.ResponseError), True)
        check("exec with an error: last", replies[2], True)
        check("exec with an error: applied", r.get(p + "b"), "y")
        # A queuing error aborts the whole transaction: nothing is written.
        pipe = r.pipeline(transaction=True)
        pipe.set(p + "c", "1")
        pipe.execute_command("SET")  # wrong arity
        try:
            pipe.execute()
            sys.exit("EXECABORT did not raise")
        except redis.ResponseError as e:
            check("execabort text", "Transaction discarded because of previous errors" in str(e) or "wrong number" in str(e), True)
        check("execabort wrote nothing", r.exists(p + "c"), 0)

        # WATCH retry loop under contention: 8 threads add 1 each, 50 times.
        r.set(p + "counter", 0)
        retries = [0]
        lock = threading.Lock()

        def worker():
            c = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, decode_responses=True)
            for _ in range(50):
                while True:
                    with c.pipeline() as pipe:
                        try:
                            pipe.watch(p + "counter")
                            n = int(pipe.get(p + "counter"))
                            pipe.multi()
                            pipe.set(p + "counter", n + 1)
                            pipe.execute()
                            break
                        except redis.WatchError:
                            with lock:
                                retries[0] += 1
            c.close()

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check("WATCH counter under contention", r.get(p + "counter"), "400")

        # The transaction() helper (WATCH + retry) redis-py users write.
        r.set(p + "stock", 3)

        def buy(pipe):
            stock = int(pipe.get(p + "stock"))
            pipe.multi()
            pipe.set(p + "stock", stock - 1)

        r.transaction(buy, p + "stock")
        check("transaction() helper", r.get(p + "stock"), "2")
        # A watched key changed by another client: WatchError.
        with r.pipeline() as pipe:
            pipe.watch(p + "stock")
            redis.Redis(host="127.0.0.1", port=port).set(p + "stock", 10)
            pipe.multi()
            pipe.set(p + "stock", 0)
            try:
                pipe.execute()
                sys.exit("WatchError not raised")
            except redis.WatchError:
                pass
        check("watched write lost", r.get(p + "stock"), "10")
        r.close()
    print("redis-py transactions: ok")


def dogpile(port):
    from dogpile.cache import make_region
    from dogpile.cache.api import NO_VALUE

    region = make_region().configure(
        "dogpile.cache.redis",
        expiration_time=60,
        arguments={"host": "127.0.0.1", "port": port, "db": 0, "redis_expiration_time": 120, "distributed_lock": True, "thread_local_lock": False},
    )
    region.set_multi({"dp:a": 1, "dp:b": {"x": [1, 2]}, "dp:c": "three"})
    check("dogpile get_multi", region.get_multi(["dp:a", "dp:b", "dp:c", "dp:none"]), [1, {"x": [1, 2]}, "three", NO_VALUE])
    region.delete_multi(["dp:a", "dp:b"])
    check("dogpile delete_multi", region.get_multi(["dp:a", "dp:b", "dp:c"]), [NO_VALUE, NO_VALUE, "three"])
    calls = []

    @region.cache_on_arguments()
    def price(sku):
        calls.append(sku)
        return sku * 2

    check("dogpile cached call", (price(21), price(21)), (42, 42))
    check("dogpile computed once", calls, [21])
    ttl = redis.Redis(host="127.0.0.1", port=port).ttl("dp:c")
    check("dogpile redis_expiration_time", 100 < ttl <= 120, True)
    print("dogpile.cache: ok")


def aiocache_check(port):
    from aiocache import RedisCache

    async def run():
        cache = RedisCache(endpoint="127.0.0.1", port=port, namespace="aio")
        check("aiocache multi_set", await cache.multi_set([("a", "1"), ("b", "2")], ttl=50), True)
        check("aiocache multi_get", await cache.multi_get(["a", "b", "none"]), ["1", "2", None])
        ttl = redis.Redis(host="127.0.0.1", port=port).ttl("aio:a")
        check("aiocache ttl", 40 < ttl <= 50, True)
        check("aiocache add", await cache.add("c", "3"), True)
        check("aiocache increment", await cache.increment("n", 5), 5)
        check("aiocache delete", await cache.delete("a"), 1)
        await cache.close()

    asyncio.run(run())
    print("aiocache: ok")


def django_check(port):
    import django
    from django.conf import settings

    settings.configure(CACHES={
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
                    "KEY_PREFIX": "dj"},
        "djredis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{port}/0",
                    "KEY_PREFIX": "djr"},
    })
    django.setup()
    from django.core.cache import caches

    for name in ("default", "djredis"):
        c = caches[name]
        c.set_many({"a": 1, "b": "two", "c": [3]}, timeout=30)
        check(f"{name} get_many", c.get_many(["a", "b", "c", "none"]), {"a": 1, "b": "two", "c": [3]})
        c.delete_many(["a", "b"])
        check(f"{name} delete_many", c.get_many(["a", "b", "c"]), {"c": [3]})
        c.set("n", 1)
        check(f"{name} incr", c.incr("n", 41), 42)
        check(f"{name} touch", c.touch("c", 300), True)
        check(f"{name} add", (c.add("new", 1), c.add("new", 2)), (True, False))
        if name == "djredis":
            c.set_many({"pat:1": 1, "pat:2": 2, "other": 3})
            check("django-redis delete_pattern", c.delete_pattern("pat:*"), 2)
            check("django-redis after delete_pattern", c.get_many(["pat:1", "pat:2", "other"]), {"other": 3})
        c.clear()
        check(f"{name} clear", c.get("c"), None)
    print("django: ok")


if __name__ == "__main__":
    port = int(sys.argv[1])
    parts = sys.argv[2:] or ["redis-py", "dogpile", "aiocache", "django"]
    for part in parts:
        {"redis-py": redis_py, "dogpile": dogpile, "aiocache": aiocache_check, "django": django_check}[part](port)
    print("all checks passed")
