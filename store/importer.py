"""`crm import customers FILE.csv`: good rows become events keyed by their content; bad rows are reported.

Re-importing a file changes nothing: a row's idempotency key is a hash of its values, so a row seen
before is recognised and skipped, and only rows that changed write anything.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from store import events as ev
from store.identity import IdentityError, normalise_email, normalise_phone
from store.uow import EventStore

COLUMNS = ("name", "email", "company", "phone", "stage", "mrr", "renewal_date", "notes")
IDENTITY_COLUMNS = ("name", "email", "company", "phone")
ROWS_PER_TRANSACTION = 250
MAX_FIELD = 10_000


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# How much of a file is looked at to tell text from binary before importing it.
TEXT_CHECK_BYTES = 8192


class ImportFileError(ValueError):
    """The file as a whole cannot be read (encoding, header); nothing was imported."""


@dataclass(frozen=True)
class CustomerRow:
    line: int
    values: dict[str, str]
    ref: ev.CustomerRef
    created: ev.CustomerCreated

    @property
    def idempotency_key(self) -> str:
        canonical = json.dumps([self.values.get(c, "") for c in COLUMNS], ensure_ascii=False)
        return "import:customers:" + hashlib.sha256(canonical.encode()).hexdigest()

    def update(self) -> ev.CustomerUpdated:
        c = self.created
        return ev.CustomerUpdated(
            name=c.name,
            company=c.company,
            stage=c.stage if self.values.get("stage") else None,
            mrr_cents=c.mrr_cents if self.values.get("mrr") else None,
            renewal_date=c.renewal_date,
            notes=c.notes,
        )


def parse_row(line: int, raw: dict[str, str], region: str) -> CustomerRow:
    """Validate one row; raises ValueError naming every problem of the row a person can act on."""
    values = {k: (raw.get(k) or "").strip() for k in COLUMNS}
    problems: list[str] = []
    if not any(values[k] for k in IDENTITY_COLUMNS):
        problems.append("needs at least one of name, email, company, phone")
    problems += [
        f"{name} is longer than {MAX_FIELD} characters" for name, v in values.items() if len(v) > MAX_FIELD
    ]
    for column, check in (("email", normalise_email), ("phone", lambda v: normalise_phone(v, region))):
        if values[column] and len(values[column]) <= MAX_FIELD:
            try:
                check(values[column])
            except IdentityError as exc:
                problems.append(str(exc))
    stage = values["stage"].lower() or "lead"
    if stage not in ev.STAGES:
        problems.append(f"stage {values['stage']!r} is not one of {', '.join(ev.STAGES)}")
    mrr_cents = 0
    try:
        mrr_cents = ev.to_cents(values["mrr"].replace(",", "").lstrip("$€£")) if values["mrr"] else 0
    except ValueError:
        problems.append(f"mrr {values['mrr']!r} is not an amount such as 49.00")
    if mrr_cents < 0:
        problems.append("mrr cannot be negative")
    renewal = None
    try:
        renewal = date.fromisoformat(values["renewal_date"]) if values["renewal_date"] else None
    except ValueError:
        problems.append(f"renewal_date {values['renewal_date']!r} is not a date as YYYY-MM-DD")
    if problems:
        raise ValueError("; ".join(problems))
    ref = ev.CustomerRef(
        name=values["name"] or None,
        email=values["email"] or None,
        company=values["company"] or None,
        phone=values["phone"] or None,
    )
    created = ev.CustomerCreated(
        name=values["name"] or None,
        company=values["company"] or None,
        stage=stage,
        mrr_cents=mrr_cents,
        renewal_date=renewal,
        notes=values["notes"] or None,
    )
    return CustomerRow(line, values, ref, created)


def check_text_file(path: Path) -> None:
    """Refuse what cannot be a CSV before reading it: a device or pipe (`/dev/zero` never ends), a
    folder, or a binary file (NUL bytes in its first block)."""
    try:
        if not path.exists():
            raise ImportFileError(f"cannot open {path}: no such file")
        if not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            raise ImportFileError(f"{path} is {what}; give the path of a CSV file")
        with path.open("rb") as handle:
            head = handle.read(TEXT_CHECK_BYTES)
    except OSError as exc:
        raise ImportFileError(f"cannot open {path}: {exc.strerror}") from None
    if b"\0" in head:
        raise ImportFileError(f"{path} is not a text file; save it as CSV UTF-8 and import again")


def read_rows(path: Path, report: ImportReport, region: str = "US") -> Iterator[CustomerRow]:
    """Good rows of the file; bad ones go into the report with their line numbers."""
    check_text_file(path)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFileError(f"cannot open {path}: {exc.strerror}") from None
    with handle:
        try:
            # csv.reader, not DictReader: DictReader skips blank lines silently, which would make the
            # line numbers reported for later rows point at the wrong line.
            reader = csv.reader(handle)
            header = [name.strip().lower() for name in next(reader, [])]
        except UnicodeDecodeError:
            raise ImportFileError(
                f"{path} is not UTF-8 text; save it as CSV UTF-8 and import again"
            ) from None
        if not header:
            raise ImportFileError(f"{path} is empty; the first line must be the header: {','.join(COLUMNS)}")
        if not set(header) & set(IDENTITY_COLUMNS):
            raise ImportFileError(
                f"line 1: the header has none of {', '.join(IDENTITY_COLUMNS)}; expected {','.join(COLUMNS)}"
            )
        report.unknown_columns = [name for name in header if name and name not in COLUMNS]
        line = reader.line_num + 1
        try:
            for fields in reader:
                start, line = line, reader.line_num + 1
                if not any(field.strip() for field in fields):
                    continue  # a blank line, or a spreadsheet's empty row of commas
                report.rows += 1
                if len(fields) > len(header):
                    report.errors.append(RowError(start, f"{len(fields)} fields, header has {len(header)}"))
                    continue
                raw = dict(zip(header, fields, strict=False))
                try:
                    yield parse_row(start, raw, region)
                except ValueError as exc:
                    report.errors.append(RowError(start, str(exc)))
        except UnicodeDecodeError:
            report.errors.append(RowError(line, "not UTF-8 text; save the file as CSV UTF-8"))
        except csv.Error as exc:
            report.errors.append(RowError(reader.line_num, f"unreadable CSV: {exc}"))


def import_customers(
    store: EventStore, path: Path, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Import a customer CSV (columns in COLUMNS); returns what happened, row by row."""
    report = ImportReport()
    rows = read_rows(path, report, store.phone_region)
    while True:
        chunk = [row for _, row in zip(range(ROWS_PER_TRANSACTION), rows, strict=False)]
        if not chunk:
            break
        with store.transaction() as tx:
            for row in chunk:
                key = row.idempotency_key
                if tx.find(key) is not None:
                    report.unchanged += 1
                    continue
                before = len(tx.appended)
                customer_id = tx.resolve_customer(
                    row.ref, key, source="import", created=row.created, created_key=key
                )
                if tx.find(key) is None:  # an existing customer: record what the row says about them
                    tx.append(
                        ev.NewEvent(
                            type="customer.updated",
                            payload=row.update(),
                            stream=customer_id,
                            idempotency_key=key,
                            source="import",
                        ),
                        dispatch=False,
                    )
                report.imported += 1 if len(tx.appended) > before else 0
        if progress is not None:
            progress(len(chunk))
    return report
