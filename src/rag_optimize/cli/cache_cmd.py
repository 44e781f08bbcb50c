"""``rag-optimize cache stats|clear --redis URL --namespace NS``: manage a shared Redis cache.

``stats`` prints the number of entries, the vector dimension and the store's diagnostics
(circuit breaker state, change-log position) as ``key: value`` lines, or JSON with
``--json``; ``clear`` deletes every entry of the namespace (only that namespace: other caches
in the same Redis are untouched) and prints how many were removed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rag_optimize.cli.errors import FAILURE, CliError
from rag_optimize.errors import ConfigurationError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("cache", help="inspect or clear a shared (Redis) semantic cache",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("stats", "clear"))
    p.add_argument("--redis", required=True, metavar="URL", help="e.g. redis://localhost:6379/0")
    p.add_argument("--namespace", required=True, metavar="NS",
                   help="the namespace the cache was created with")
    p.add_argument("--json", action="store_true", help="print stats as JSON")
    p.set_defaults(handler=run_cache)


def open_store(url: str, namespace: str) -> Any:
    """A :class:`~rag_optimize.cache.redis.store.RedisStore` on ``url`` / ``namespace``."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--redis must be a redis:// , rediss:// or unix:// URL, got {url!r}")
    if not namespace.strip():
        raise CliError("--namespace must not be empty")
    try:
        from rag_optimize.cache.redis.store import RedisStore
    except ImportError as exc:
        raise CliError(
            f"the Redis store is not available ({exc}); pip install 'rag-optimize[redis]'",
            FAILURE,
        ) from None
    try:
        # Admin commands may wait longer than a request would, and need no vector mirror.
        return RedisStore(url, namespace, timeout_ms=2000, startup_wait_ms=0)
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"cannot open the Redis cache at {url}: {exc}", FAILURE) from None


def run_cache(args: argparse.Namespace) -> int:
    store = open_store(args.redis, args.namespace)
    try:
        if args.action == "clear":
            before = store.count()
            store.clear()
            print(f"cleared {before} entries from namespace {args.namespace!r} at {args.redis}")
            return 0
        stats: dict[str, Any] = {"namespace": args.namespace, "entries": store.count()}
        store.wait_synced(5.0)
        stats["dimension"] = store.namespace_dim
        stats.update(store.status())
        if args.json:
            print(json.dumps(stats))
        else:
            for key, value in stats.items():
                print(f"{key}: {value}")
        return 0
    except CliError:
        raise
    except Exception as exc:
        message = f"Redis cache at {args.redis}: {type(exc).__name__}: {exc}"
        raise CliError(message, FAILURE) from None
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()
