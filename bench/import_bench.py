"""Import throughput for a 10,000-row customer CSV on SQLite and Postgres, next to a plain bulk insert.

Run by hand: `/work/venv/bin/python bench/import_bench.py [--rows 10000] [--backend sqlite|postgres|both]`.

The file is realistic: four people per company domain (so weak matches are found and recorded), a phone
on every third row, notes with quoted commas. Measured in the same run, per backend:

1. baseline: the same number of rows written with one executemany INSERT into a scratch table;
2. `store.importer.import_customers` on an empty database (identity resolution, events, projections);
3. the same file again (every row recognised by its idempotency key, nothing written).

Databases are created in a temporary directory / a dedicated Postgres database and dropped at the end.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from benchkit import machine
from sqlalchemy import Column, Engine, MetaData, String, Table, func, insert, select

from store import tables as t
from store.db import make_engine, migrate
from store.importer import COLUMNS, import_customers
from store.uow import EventStore

ADMIN_DSN = os.environ.get("CRM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def write_file(path: Path, rows: int) -> list[list[str]]:
    data = [
        [
            f"Person {i}",
            f"person{i}@company{i // 4}.example",
            f"Company {i // 4}",
            f"+1 212 555 {i % 10_000:04d}" if i % 3 == 0 else "",
            ["lead", "trial", "customer"][i % 3],
            f"{i % 500}.00",
            "2026-01-31" if i % 5 == 0 else "",
            "renews, maybe" if i % 7 == 0 else "",
        ]
        for i in range(rows)
    ]
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        out.writerows(data)
    return data


def baseline(engine: Engine, data: list[list[str]]) -> float:
    """Rows/s of writing the same rows with one executemany and no rules at all."""
    scratch = Table("bench_rows", MetaData(), *(Column(name, String(320)) for name in COLUMNS))
    scratch.create(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(insert(scratch), [dict(zip(COLUMNS, row, strict=True)) for row in data])
    seconds = time.perf_counter() - started
    scratch.drop(engine)
    return len(data) / seconds


def measure(label: str, engine: Engine, path: Path, data: list[list[str]]) -> None:
    migrate(engine)
    base = baseline(engine, data)
    store = EventStore(engine)
    started = time.perf_counter()
    report = import_customers(store, path)
    first = time.perf_counter() - started
    assert report.ok and report.imported == len(data), report
    with engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(t.events)).scalar_one()
    started = time.perf_counter()
    again = import_customers(store, path)
    second = time.perf_counter() - started
    assert again.imported == 0 and again.unchanged == len(data)
    rate, rate_again = len(data) / first, len(data) / second
    print(
        f"{label:9} baseline executemany {base:>9,.0f} rows/s | import {rate:>6,.0f} rows/s "
        f"({first:.1f}s, {events:,} events, {rate / base:.4f}x baseline) | "
        f"re-import {rate_again:>6,.0f} rows/s ({second:.1f}s, nothing written)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows when piped
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "customers.csv"
        data = write_file(path, args.rows)
        if args.backend in {"sqlite", "both"}:
            engine = make_engine(f"sqlite:///{tmp}/bench.sqlite3")
            measure("sqlite", engine, path, data)
            engine.dispose()
        if args.backend in {"postgres", "both"}:
            name = f"crm_bench_import_{os.getpid()}"
            with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            engine = make_engine(f"{url}/{name}")
            try:
                measure("postgres", engine, path, data)
            finally:
                engine.dispose()
                with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
