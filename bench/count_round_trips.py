"""PostgreSQL and Redis round trips per request, by endpoint (docs/operating.md, "Scaling out").

Usage: .venv/bin/python bench/count_round_trips.py [--runs 5] [--out PATH]

The stack of tests/stack.py (the test IdP, the CRM, authserver on werkzeug's threaded server, all
in this process) on a throw-away PostgreSQL database and Redis db 13 (`bench.common`). A
SQLAlchemy engine listener counts the statements the app's engine sends (and BEGIN, COMMIT,
ROLLBACK: each is a round trip with psycopg), and the store's Redis client is wrapped to count
its commands (pipelined ones too) and its round trips (writes to the server: one per command,
or one for a pipeline's batch). Each request kind runs once to warm the in-process caches, then
`--runs` times; the table gives the median count of one request. Nothing is timed.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REDIS_URL, fresh_postgres, print_table, redis_prefix
from tests.gateway_helpers import capability
from tests.stack import intent, make_stack

SQL_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE")


class Counter:
    """Counts SQL statements and transaction ends on one engine, and Redis commands."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def attach(self, services: Any) -> None:
        engine = services.db.engine

        @event.listens_for(engine, "before_cursor_execute")
        def _statement(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
            verb = statement.lstrip().split(None, 1)[0].upper()
            self.add("sql " + (verb if verb in SQL_VERBS else "other"))

        for name in ("begin", "commit", "rollback"):
            event.listen(engine, name, lambda _conn, name=name: self.add("sql " + name))
        self.held = 0

        @event.listens_for(engine, "checkout")
        def _checkout(*_a: Any) -> None:
            with self.lock:
                self.held += 1
                self.counts["pool max held"] = max(self.counts["pool max held"], self.held)

        @event.listens_for(engine, "checkin")
        def _checkin(*_a: Any) -> None:
            with self.lock:
                self.held -= 1
        # Redis commands by name, a pipeline's too (Store.incr_windows), and round trips: one
        # per write to the server (a command, or a pipeline's batch).
        client = services.store._r
        execute, pipeline = client.execute_command, client.pipeline

        def counting(*args: Any, **options: Any) -> Any:
            self.add("redis " + str(args[0]).upper())
            return execute(*args, **options)

        def counting_pipeline(*args: Any, **options: Any) -> Any:
            pipe = pipeline(*args, **options)
            queue = pipe.pipeline_execute_command

            def noting(*command: Any, **command_options: Any) -> Any:
                self.add("redis " + str(command[0]).upper())
                return queue(*command, **command_options)

            pipe.pipeline_execute_command = noting
            return pipe

        connection_class = client.connection_pool.connection_class
        send = connection_class.send_packed_command

        def sending(connection: Any, *args: Any, **options: Any) -> Any:
            self.add("redis round trip")
            return send(connection, *args, **options)

        client.execute_command = counting
        client.pipeline = counting_pipeline
        connection_class.send_packed_command = sending

    def measure(self, call: Callable[[], Any]) -> collections.Counter[str]:
        with self.lock:
            self.counts["pool max held"] = base = self.held  # relative: held before the call
            before = collections.Counter(self.counts)
        call()
        with self.lock:
            assert self.held == base, "a connection is still checked out after the request"
            delta = self.counts - before
            delta["pool max held"] = self.counts["pool max held"] - base
            return delta


def summarise(samples: list[collections.Counter[str]]) -> dict[str, Any]:
    def median(select: Callable[[str], bool]) -> float:
        return statistics.median(sum(v for k, v in s.items() if select(k)) for s in samples)

    sql_statements = median(lambda k: k.split()[-1] in (*SQL_VERBS, "other")
                            and k.startswith("sql "))
    held = max(s["pool max held"] for s in samples)
    transactions = median(lambda k: k in ("sql commit", "sql rollback"))
    writes = median(lambda k: k in ("sql INSERT", "sql UPDATE", "sql DELETE"))
    redis_commands = median(lambda k: k.startswith("redis ") and k != "redis round trip")
    redis_round_trips = median(lambda k: k == "redis round trip")
    kinds = collections.Counter[str]()
    for s in samples:
        kinds.update(s)
    return {
        "sql statements": sql_statements,
        "of which writes": writes,
        "transactions": transactions,
        # psycopg sends BEGIN before a transaction's first statement and COMMIT at its end.
        "pg round trips": sql_statements + 2 * transactions,
        "redis commands": redis_commands,
        "redis round trips": redis_round_trips,
        # The most pooled connections one request held at once.
        "pg connections": held,
        "detail (total over runs)": dict(sorted(kinds.items())),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "authserver"],
                           capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="count-rt-") as tmp, fresh_postgres() as db_url, \
            redis_prefix() as prefix:
        stack = make_stack(Path(tmp), database_url=db_url, redis_url=REDIS_URL,
                           extra_settings={"redis_key_prefix": prefix})
        try:
            counter = Counter()
            counter.attach(stack.services)
            stack.signed_in_and_connected("alice", ("crm",))
            cc_id, cc_secret = stack.register({
                "client_name": "cc", "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["client_credentials"]})
            agent = stack.agent

            def client_credentials_basic() -> None:
                r = requests.post(stack.issuer + "/token", auth=(cc_id, cc_secret or ""),
                                  data={"grant_type": "client_credentials"}, timeout=30)
                assert r.status_code == 200, r.text

            def client_credentials_jwt() -> None:
                r = requests.post(stack.issuer + "/token", timeout=30, data={
                    "grant_type": "client_credentials", "client_id": agent.client_id,
                    "client_assertion_type":
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": agent.assertion(stack.issuer)})
                assert r.status_code == 200, r.text

            def edge_mint() -> Callable[[], None]:
                id_token = stack.idp_id_token("alice")
                key = stack.dpop_key()

                def call() -> None:
                    from tests.stack import mandate

                    r = stack.edge_mint_response(id_token, mandate(), dpop_jkt=str(key.dpop_jkt))
                    assert r.status_code == 200, r.text
                return call

            def agent_exchange() -> Callable[[], None]:
                assertion, key = stack.edge_mint("alice")

                def call() -> None:
                    r = stack.agent_exchange(assertion, key, intent=intent("read", "deal:acme-123"))
                    assert r.status_code == 200, r.text
                return call

            token, key = capability(stack, "alice", intent("read", "deal:acme-123"))

            def gateway_call() -> None:
                r = stack.gateway(token, key, "GET", "crm/deals/acme-123")
                assert r.status_code == 200, r.text

            kinds: dict[str, Callable[[], Callable[[], None]]] = {
                "client_credentials (client_secret_basic)": lambda: client_credentials_basic,
                "client_credentials (private_key_jwt)": lambda: client_credentials_jwt,
                "edge mint (IdP ID token -> user assertion)": edge_mint,
                "agent exchange (DPoP, intent)": agent_exchange,
                "gateway call (GET, DPoP)": lambda: gateway_call,
            }
            for name, prepare in kinds.items():
                counter.measure(prepare())  # warm-up: in-process caches filled
                samples = [counter.measure(call) for call in [prepare() for _ in range(args.runs)]]
                rows[name] = summarise(samples)
        finally:
            stack.close()
    where = f"commit {commit}" + (" + uncommitted changes in authserver/" if dirty else "")
    print_table(f"Round trips per request, median of {args.runs} ({where}; PostgreSQL + Redis)",
                [{"request": k, **v} for k, v in rows.items()],
                ["request", "sql statements", "of which writes", "transactions",
                 "pg round trips", "pg connections", "redis commands",
                 "redis round trips"])
    for name, row in rows.items():
        print(f"\n{name}: {json.dumps(row['detail (total over runs)'])}")
    if args.out:
        Path(args.out).write_text(json.dumps({"commit": commit, "dirty": bool(dirty),
                                              "runs": args.runs, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
