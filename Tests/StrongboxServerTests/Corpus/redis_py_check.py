"""redis-py (PyPI `redis`, RESP3 by default) against a running Strongbox.

Usage: python3 redis_py_check.py PORT. Exits non-zero with a message on the first mismatch.
"""
import sys

import redis


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def main(port):
    for protocol in (3, 2):
        r = redis.Redis(host="127.0.0.1", port=port, protocol=protocol, decode_responses=True)
        p = f"py{protocol}:"
        check("ping", r.ping(), True)
        check("set", r.set(p + "k", "v"), True)
        check("get", r.get(p + "k"), "v")
        check("get missing", r.get(p + "missing"), None)
        check("set nx on existing", r.set(p + "k", "w", nx=True), None)
        check("set nx px", r.set(p + "lock", "token", nx=True, px=30000), True)
        ttl = r.pttl(p + "lock")
        if not 29000 < ttl <= 30000:
            sys.exit(f"pttl out of range: {ttl}")
        check("incr", r.incr(p + "n"), 1)
        check("incrby", r.incrby(p + "n", 41), 42)
        check("incrbyfloat", r.incrbyfloat(p + "f", 1.5), 1.5)
        check("mset", r.mset({p + "a": "1", p + "b": "2"}), True)
        check("mget", r.mget([p + "a", p + "b", p + "none"]), ["1", "2", None])
        check("expire", r.expire(p + "a", 100), True)
        check("ttl", r.ttl(p + "a"), 100)
        check("exists", r.exists(p + "a", p + "b", p + "none"), 2)
        check("delete", r.delete(p + "a", p + "none"), 1)
        check("getdel", r.getdel(p + "b"), "2")
        try:
            r.incr(p + "k")
            sys.exit("incr on a string did not raise")
        except redis.ResponseError as e:
            check("incr error", str(e), "value is not an integer or out of range")
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"{p}pipe:{i}", i)
            pipe.get(f"{p}pipe:{i}")
        replies = pipe.execute()
        check("pipeline", replies[1::2], [str(i) for i in range(100)])
        keys = sorted(r.scan_iter(match=f"{p}pipe:*", count=10))
        check("scan_iter", keys, sorted(f"{p}pipe:{i}" for i in range(100)))
        check("client setname", r.client_setname("py-client"), True)
        check("client getname", r.client_getname(), "py-client")
        info = r.info()
        check("info redis_version", info.get("redis_version"), "7.0.15")
        if "used_memory" not in info:
            sys.exit("info lacks used_memory")
        check("config get", r.config_get("maxclients"), {"maxclients": "10000"})
        r.close()
    print("redis-py: all checks passed")


if __name__ == "__main__":
    main(int(sys.argv[1]))
