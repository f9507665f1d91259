"""Data contracts: the seven tables, their columns, and validation at load.

Every table the suite reads has one schema here: required and optional columns,
their types, allowed values and meaning. ``validate_table`` turns whatever a
source delivered (CSV strings, Parquet types, a user's own column names) into a
DataFrame that meets the contract, or raises ``SchemaError`` naming the table,
the column, how many rows are wrong and a few example rows. Nothing is dropped
silently: rows that are kept but deserve a mention (refunds, missing survey
scores, orders before sign-up) are counted in the returned notes.

Conventions, applied to every table:

* identifiers are text (``"00042"`` stays ``"00042"``; a CSV's integer ids are
  read as text, never as numbers);
* identifiers and text columns have the dtype ``TEXT``: pandas' Arrow-backed
  string dtype with NaN for a missing value (``str``, the default in pandas 3).
  The strings stay in Arrow memory: a million customers' 40 million event rows
  take a third of the memory Python strings took, and the engine (DuckDB,
  Spark) reads them without a conversion;
* timestamps are ``datetime64[us]`` without a time zone: values that carry a
  zone or offset are converted to UTC, naive values are taken to be UTC (a
  column that mixes the two is kept, with a note counting each kind);
  text must be ISO 8601 (``2024-03-01`` or ``2024-03-01 14:05:00``): any
  other format (``05/01/2024``, ``yesterday``) raises, because day-first and
  month-first cannot be told apart; years must lie in 1678-2261;
* dates are timestamps at midnight;
* money is ``float64`` in the company's currency; refunds are negative amounts
  (kept and counted in the notes; ``clv.rfm_summary`` documents how they are
  netted); zero amounts are kept as purchases and counted (CDNOW has 80);
  text numbers need a decimal point and nothing else (``1234.5``; ``"$10"``,
  ``"10,5"`` and ``"1,234"`` raise);
* identifiers may not be empty; identifiers that must be unique
  (``customers.customer_id``, ``transaction_id``, ``response_id``) raise
  when repeated, listing the rows; rows that repeat another row exactly are
  kept and counted (an export loaded twice shows up in the notes);
* dates after today or before 1970 are kept and counted (clock or time-zone
  errors, placeholder dates); rows dated before their customer's
  ``signup_date`` or naming an unknown customer are kept and counted by
  ``check_references``;
* survey scores must be whole numbers on the survey's scale (NPS 0-10, CSAT
  1-5, CES 1-7); fractions, text (``"10 - extremely likely"``) and values
  outside the scale raise; empty scores are kept and counted;
* a category outside its allowed values (an unknown survey type or e-mail
  event) raises, listing the values found and how often;
* an empty table (header only) is valid;
* columns outside the contract are ignored (left out of the loaded table, and
  listed in the notes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ClmError

#: The dtype of identifiers and text in every validated table: Arrow-backed strings, NaN when missing
#: (pandas 3's default ``str``; comparisons give numpy booleans, as with Python strings).
TEXT = pd.StringDtype("pyarrow", na_value=np.nan)


def is_arrow_text(dtype) -> bool:
    """Whether ``dtype`` is Arrow-backed pandas text (``TEXT``, or ``string[pyarrow]``): its values are Arrow strings."""
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"

__all__ = [
    "ClmError",
    "SchemaError",
    "OptionError",
    "require_columns",
    "parse_day",
    "Column",
    "TableSchema",
    "SCHEMAS",
    "TABLES",
    "SURVEY_SCALES",
    "EMAIL_EVENTS",
    "validate_table",
    "check_references",
    "write_table",
    "TEXT",
]


class SchemaError(ClmError, ValueError):
    """A table does not meet its data contract (missing column, bad value, duplicate id)."""


class OptionError(ClmError, ValueError):
    """An option given to a metric function has an invalid value."""


def require_columns(df, table: str, columns) -> None:
    """The one shared check that a metric function's input is a DataFrame with the columns it needs."""
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"{table}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{table}: missing column(s) {missing}; it has {list(df.columns)}")


def parse_day(value, what: str) -> pd.Timestamp | None:
    """A date option (``observation_end="2024-12-31"``) as a midnight Timestamp; None or "" stay None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return pd.Timestamp(value).normalize()
    except (ValueError, TypeError) as exc:
        raise OptionError(f"{what} must be a date such as 2024-12-31, got {value!r}") from exc


# ----------------------------------------------------------------------------- contracts

#: Column kinds: how a value is parsed and checked.
KINDS = ("id", "timestamp", "date", "number", "count", "category", "text")


@dataclass(frozen=True)
class Column:
    """One column of a contract: name, kind, whether required, and what it means."""

    name: str
    kind: str
    description: str
    required: bool = True
    nullable: bool = False
    unique: bool = False
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name}: kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class TableSchema:
    """The contract of one table: its columns, in order, and what a row is."""

    name: str
    description: str
    columns: tuple[Column, ...]
    time_column: str | None = None

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def optional(self) -> list[str]:
        return [c.name for c in self.columns if not c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def describe(self) -> pd.DataFrame:
        """The contract as a table: column, type, required, meaning."""
        return pd.DataFrame(
            {
                "column": [c.name for c in self.columns],
                "type": [c.kind for c in self.columns],
                "required": [c.required for c in self.columns],
                "allowed": [", ".join(c.allowed) if c.allowed else "" for c in self.columns],
                "meaning": [c.description for c in self.columns],
            }
        )


#: Dates before this are counted in the notes as likely placeholders.
EARLIEST_DATE = pd.Timestamp("1970-01-01")

#: Survey types and their answer scales (inclusive, whole numbers).
SURVEY_SCALES: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}

#: The e-mail events a platform export may contain, one row per event.
EMAIL_EVENTS = ("sent", "delivered", "bounce_hard", "bounce_soft", "open", "click", "unsubscribe", "complaint")

SCHEMAS: dict[str, TableSchema] = {
    s.name: s
    for s in [
        TableSchema(
            "customers",
            "One row per customer: who they are and how they were acquired.",
            (
                Column("customer_id", "id", "The customer's identifier, shared by every table.", unique=True),
                Column("signup_date", "date", "Day the customer signed up (or first bought, where there is no sign-up)."),
                Column("acquisition_channel", "text", "Marketing channel that acquired the customer.", required=False, nullable=True),
                Column("country", "text", "Country of the customer (ISO code or name).", required=False, nullable=True),
                Column("region", "text", "Sales region.", required=False, nullable=True),
                Column("age_band", "text", "Age band, such as 25-34.", required=False, nullable=True),
                Column("plan", "text", "Membership plan the customer holds, or none.", required=False, nullable=True),
            ),
            time_column="signup_date",
        ),
        TableSchema(
            "transactions",
            "One row per purchase or refund.",
            (
                Column("customer_id", "id", "Who bought."),
                Column("timestamp", "timestamp", "When the order was placed."),
                Column("amount", "number", "Order value in the company's currency; refunds are negative."),
                Column("transaction_id", "id", "The order's identifier.", required=False, unique=True),
                Column("channel", "text", "Where the order was placed (web, app, store).", required=False, nullable=True),
            ),
            time_column="timestamp",
        ),
        TableSchema(
            "marketing_spend",
            "One row per day, channel (and campaign): money spent to acquire customers.",
            (
                Column("date", "date", "Day of the spend."),
                Column("channel", "text", "Acquisition channel, as in customers.acquisition_channel."),
                Column("spend", "number", "Money spent that day.", minimum=0),
                Column("campaign", "text", "Campaign name.", required=False, nullable=True),
                Column("leads", "count", "Leads generated that day (for cost per lead).", required=False, nullable=True, minimum=0),
            ),
            time_column="date",
        ),
        TableSchema(
            "email_events",
            "One row per e-mail event (sent, delivered, bounce, open, click, unsubscribe, complaint).",
            (
                Column("campaign_id", "id", "The campaign (one send to many customers)."),
                Column("customer_id", "id", "Recipient."),
                Column("event", "category", "What happened.", allowed=EMAIL_EVENTS),
                Column("timestamp", "timestamp", "When it happened."),
                Column("campaign_name", "text", "Human-readable campaign name.", required=False, nullable=True),
            ),
            time_column="timestamp",
        ),
        TableSchema(
            "product_events",
            "One row per in-product event (page view, click, feature use).",
            (
                Column("customer_id", "id", "Who acted."),
                Column("timestamp", "timestamp", "When."),
                Column("event", "text", "Event name, such as page_view or a feature."),
                Column("session_id", "id", "Session the event belongs to.", required=False, nullable=True),
                Column("duration_s", "number", "Seconds spent (on the page or in the session).", required=False, nullable=True, minimum=0),
            ),
            time_column="timestamp",
        ),
        TableSchema(
            "surveys",
            "One row per survey answer: NPS (0-10), CSAT (1-5) or CES (1-7).",
            (
                Column("customer_id", "id", "Who answered."),
                Column("timestamp", "timestamp", "When."),
                Column("survey", "category", "Which survey: nps, csat or ces.", allowed=tuple(SURVEY_SCALES)),
                Column("score", "number", "The answer on the survey's scale; empty when the question was skipped.", nullable=True),
                Column("response_id", "id", "The answer's identifier.", required=False, unique=True),
                Column("touchpoint", "text", "Where in the journey it was asked (purchase, support, ...).", required=False, nullable=True),
                Column("comment", "text", "Free-text comment (shown as text, never as markup).", required=False, nullable=True),
            ),
            time_column="timestamp",
        ),
        TableSchema(
            "subscriptions",
            "One row per subscription (contract): when it started and, if it did, ended.",
            (
                Column("customer_id", "id", "Subscriber."),
                Column("start_date", "date", "First day of the subscription."),
                Column("end_date", "date", "Day it ended; empty while active.", required=False, nullable=True),
                Column("plan", "text", "Plan name (a trial is plan 'trial').", required=False, nullable=True),
                Column("mrr", "number", "Monthly recurring revenue of the subscription.", required=False, nullable=True, minimum=0),
            ),
            time_column="start_date",
        ),
    ]
}

#: Table names in their canonical order.
TABLES: tuple[str, ...] = tuple(SCHEMAS)


# ----------------------------------------------------------------------------- validation


def _examples(df: pd.DataFrame, mask: pd.Series, column: str, *, limit: int = 3) -> str:
    """'row 4 (customer_id 'C1'): 'abc', ...' for the first few rows where mask holds."""
    rows = df.loc[mask, column].head(limit)
    key = next((k for k in ("transaction_id", "response_id", "customer_id", "campaign_id") if k in df.columns and k != column), None)
    parts = []
    for idx, value in rows.items():
        pos = df.index.get_loc(idx)
        label = f"row {pos + 1}"
        if key is not None:
            label += f" ({key} {df.at[idx, key]!r})"
        parts.append(f"{label}: {value!r}")
    return "; ".join(parts)


def _fail(table: str, column: str, df: pd.DataFrame, mask: pd.Series, what: str, hint: str = "") -> None:
    n_bad = int(mask.sum())
    if n_bad:
        raise SchemaError(f"{table}.{column}: {n_bad:,} of {len(df):,} rows {what} (e.g. {_examples(df, mask, column)})"
                          + (f"; {hint}" if hint else ""))


def _strip(raw: pd.Series, *, lower: bool = False) -> pd.Series:
    """``raw.astype("string").str.strip()`` (and ``.str.lower()``), vectorised through Arrow: at a million rows per table
    the per-value Python calls of ``.str`` took most of the load. Whitespace is Unicode's White_Space, as in ``str.strip``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = raw.astype("string")
    try:
        arr = pa.array(text.to_numpy(dtype=object, na_value=None), type=pa.string())
    except (pa.ArrowException, TypeError):  # not plain text after all: the slow path
        out = text.str.strip()
        return out.str.lower() if lower else out
    clean = pc.utf8_trim_whitespace(arr)
    if lower:
        clean = pc.utf8_lower(clean)
    if pc.all(pc.fill_null(pc.equal(arr, clean), True)).as_py():
        return text  # nothing to change: keep the values as they are
    return pd.Series(clean.to_pandas(), index=text.index, dtype="string")


def _parse_ids(table: str, col: Column, raw: pd.Series, df: pd.DataFrame) -> pd.Series:
    if pd.api.types.is_float_dtype(raw):
        whole = raw.dropna()
        if (whole != np.floor(whole)).any():
            _fail(table, col.name, df, raw.notna() & (raw != np.floor(raw)), "are not whole-number identifiers")
        out = raw.astype("Int64").astype("string")
    else:
        out = _strip(raw)
        out = out.mask(out == "")
    if not col.nullable:
        _fail(table, col.name, df, out.isna(), "have no identifier (empty)")
    return out.astype(TEXT)


#: A time of day followed by a zone: Z or an offset such as +02:00, -0500, +01.
_ZONED = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


def _parse_time(table: str, col: Column, raw: pd.Series, df: pd.DataFrame) -> pd.Series:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        out = raw.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_any_dtype(raw):
        out = raw
    else:
        text = _strip(raw)
        text = text.mask(text == "")
        # values with and without a zone are parsed apart: in one call, pandas reads a naive value that
        # follows a zoned one in that value's offset (so the result would depend on the row order)
        zoned = text.str.contains(_ZONED, regex=True).fillna(False).astype(bool)
        parts = [pd.to_datetime(text[m], errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None).astype("datetime64[us]")
                 for m in (zoned, ~zoned) if m.any()]
        out = pd.concat(parts).reindex(text.index) if parts else pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
        _fail(
            table, col.name, df, text.notna() & out.isna(),
            "are not ISO 8601 dates or times between the years 1678 and 2261 (expected e.g. 2024-03-01 or 2024-03-01 14:05:00)",
        )
    out = out.astype("datetime64[us]")
    if col.kind == "date":
        out = out.dt.normalize()
    if not col.nullable:
        _fail(table, col.name, df, out.isna(), "have no date")
    return out


def _parse_number(table: str, col: Column, raw: pd.Series, df: pd.DataFrame) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw):
        _fail(table, col.name, df, pd.Series(True, index=raw.index), "are true/false, not numbers")
    if pd.api.types.is_numeric_dtype(raw):
        out = raw.astype("float64")
    else:
        text = _strip(raw)
        text = text.mask(text == "")
        out = pd.to_numeric(text, errors="coerce").astype("float64")
        _fail(table, col.name, df, text.notna() & out.isna(), "are not numbers",
              "write plain numbers with a decimal point (1234.5): no currency sign, unit, label or thousands separator")
    _fail(table, col.name, df, pd.Series(np.isinf(out.to_numpy()), index=out.index), "are infinite")
    if not col.nullable:
        _fail(table, col.name, df, out.isna(), "are empty")
    if col.minimum is not None:
        _fail(table, col.name, df, out < col.minimum, f"are below the minimum {col.minimum:g}")
    if col.kind == "count":
        _fail(table, col.name, df, out.notna() & (out != np.floor(out)), "are not whole numbers")
    return out


def _parse_text(table: str, col: Column, raw: pd.Series, df: pd.DataFrame) -> pd.Series:
    out = _strip(raw, lower=True) if col.kind == "category" else raw.astype("string")
    missing = out.isna()
    if not col.nullable:
        stripped = out if col.kind == "category" else _strip(out)
        _fail(table, col.name, df, missing | (stripped == "").fillna(False), "are empty")
    if col.allowed is not None:
        bad = ~missing & ~out.isin(col.allowed).fillna(False)
        if bad.any():
            values = pd.Series(out[bad]).value_counts().head(5)
            shown = ", ".join(f"{v!r} ({n:,})" for v, n in values.items())
            raise SchemaError(
                f"{table}.{col.name}: {int(bad.sum()):,} of {len(df):,} rows have a value outside "
                f"{list(col.allowed)}: {shown} (e.g. {_examples(df, bad, col.name)})"
            )
    return out.astype(TEXT)


_PARSERS = {
    "id": _parse_ids,
    "timestamp": _parse_time,
    "date": _parse_time,
    "number": _parse_number,
    "count": _parse_number,
    "category": _parse_text,
    "text": _parse_text,
}


def _apply_mapping(table: str, df: pd.DataFrame, mapping: dict[str, str] | None) -> pd.DataFrame:
    if not mapping:
        return df
    schema = SCHEMAS[table]
    contract = {c.name for c in schema.columns}
    unknown = sorted(set(mapping.values()) - contract)
    if unknown:
        raise SchemaError(f"{table}: the column mapping targets {unknown}, which are not contract columns; valid: {sorted(contract)}")
    absent = sorted(set(mapping) - set(df.columns))
    if absent:
        raise SchemaError(f"{table}: the column mapping names {absent}, which the source does not have; it has {list(df.columns)}")
    return df.rename(columns=mapping)


def validate_table(table: str, df: pd.DataFrame, *, mapping: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Check ``df`` against the contract of ``table``; return the clean table and notes.

    ``mapping`` renames the source's columns onto the contract
    (``{"order_value": "amount"}``). The result has the contract's columns in
    contract order (optional ones only where the source has them), parsed to
    their types; the input is not modified. Raises ``SchemaError`` on the
    first rule a column breaks, naming the table, column, count and examples.
    Notes list what was kept but deserves a mention (extra columns ignored,
    refunds, unanswered surveys), each with its count.
    """
    if table not in SCHEMAS:
        raise SchemaError(f"table must be one of {list(TABLES)}, got {table!r}")
    schema = SCHEMAS[table]
    df = _apply_mapping(table, df, mapping).reset_index(drop=True)
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{table}: missing required column(s) {missing}; the source has {list(df.columns)}. "
            f"Rename them with a column mapping, e.g. mapping={{'{table}': {{'<your column>': '{missing[0]}'}}}}"
        )
    notes = []
    extra = [c for c in df.columns if c not in {col.name for col in schema.columns}]
    if extra:
        notes.append(f"{table}: ignored {len(extra)} column(s) outside the contract: {', '.join(map(str, extra))}")
    out = {}
    for col in schema.columns:
        if col.name in df.columns:
            out[col.name] = _PARSERS[col.kind](table, col, df[col.name], df)
            notes += _zone_note(table, col, df[col.name], len(df))
    clean = pd.DataFrame(out)
    for col in schema.columns:
        if col.unique and col.name in clean.columns:
            dup = clean[col.name].notna() & clean[col.name].duplicated(keep=False)
            _fail(table, col.name, clean, dup, "share an identifier with another row (must be unique)")
    notes += _table_rules(table, clean)
    return clean, notes


def _zone_note(table: str, col: Column, raw: pd.Series, n_rows: int) -> list[str]:
    """A note when a text time column mixes values with a zone or offset and values without (both are kept)."""
    if col.kind not in ("timestamp", "date") or pd.api.types.is_datetime64_any_dtype(raw):
        return []
    text = _strip(raw)
    text = text[text.notna() & (text != "")]
    zoned = int(text.str.contains(_ZONED, regex=True).sum())
    naive = len(text) - zoned
    if not zoned or not naive:
        return []
    return [f"{table}.{col.name}: {zoned:,} of {n_rows:,} rows carry a time zone or offset (converted to UTC) and "
            f"{naive:,} have none (taken as UTC); kept (check that the export wrote one clock)"]


def _table_rules(table: str, df: pd.DataFrame) -> list[str]:
    """Rules that involve more than one column or the calendar; returns notes for kept rows."""
    notes = []
    today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize() + pd.Timedelta(days=1)
    for col in SCHEMAS[table].columns:
        if col.kind in ("timestamp", "date") and col.name in df.columns and col.name != "end_date":
            future = int((df[col.name] >= today).sum())
            if future:
                notes.append(f"{table}.{col.name}: {future:,} rows are dated after today; kept (check the export's clock or time zone)")
            ancient = int((df[col.name] < EARLIEST_DATE).sum())
            if ancient:
                notes.append(f"{table}.{col.name}: {ancient:,} rows are dated before {EARLIEST_DATE:%Y-%m-%d} (placeholder dates?); kept")
    if table in ("transactions", "surveys", "product_events", "marketing_spend"):
        # a column of distinct identifiers (checked before) leaves no row equal to another
        unique_key = any(c.unique and c.name in df.columns and df[c.name].notna().all() for c in SCHEMAS[table].columns)
        duplicated = 0 if unique_key else int(df.duplicated().sum())
        if duplicated:
            notes.append(f"{table}: {duplicated:,} rows repeat another row exactly; kept (check the export was not loaded twice)")
    if table == "surveys":
        for survey, (low, high) in SURVEY_SCALES.items():
            rows = df["survey"] == survey
            score = df["score"].where(rows)
            bad = score.notna() & ((score < low) | (score > high) | (score != np.floor(score)))
            _fail(table, "score", df, bad, f"are {survey} answers outside the whole numbers {low}-{high} (survey {survey!r})")
        n_missing = int(df["score"].isna().sum())
        if n_missing:
            notes.append(f"surveys: {n_missing:,} answers have no score (kept; metrics exclude and count them)")
    if table == "transactions":
        n_refunds = int((df["amount"] < 0).sum())
        if n_refunds:
            notes.append(f"transactions: {n_refunds:,} refunds (negative amounts) kept; they are not purchases")
        n_zero = int((df["amount"] == 0).sum())
        if n_zero:
            notes.append(f"transactions: {n_zero:,} zero-amount orders kept as purchases")
    if table == "subscriptions" and "end_date" in df.columns:
        bad = df["end_date"].notna() & (df["end_date"] < df["start_date"])
        _fail(table, "end_date", df, bad, "end before they start")
    return notes


def check_references(tables: dict[str, pd.DataFrame | None]) -> list[str]:
    """Cross-table checks: counts of rows whose customer is unknown or who act before signing up.

    These rows are kept (a CRM export may lag the order system); the notes
    report how many, so a reader can judge.
    """
    notes = []
    customers = tables.get("customers")
    if customers is None:
        return notes
    known = pd.Index(customers["customer_id"])
    signup = customers.set_index("customer_id")["signup_date"]
    for name in TABLES[1:]:
        df = tables.get(name)
        if df is None or "customer_id" not in df.columns or df.empty:
            continue
        unknown = ~df["customer_id"].isin(known)
        if unknown.any():
            notes.append(
                f"{name}: {int(unknown.sum()):,} of {len(df):,} rows name a customer_id not in customers "
                f"(e.g. {', '.join(map(repr, df.loc[unknown, 'customer_id'].unique()[:3]))}); kept"
            )
        time_col = SCHEMAS[name].time_column
        early = df[time_col].dt.normalize() < df["customer_id"].map(signup)
        if early.any():
            notes.append(f"{name}: {int(early.sum()):,} rows are dated before the customer's signup_date; kept")
    return notes


# ----------------------------------------------------------------------------- the Arrow path

# A table read from a typed source (Parquet) is checked column by column in Arrow and numpy, without a
# pandas object column per step: at a million customers (40 million event rows) the pandas path above
# took two minutes and 9 GB. The Arrow path takes the column types it knows (text, whole-number ids,
# timestamps, floats and integers) and the rules they can break; it never writes an error message
# itself. Anything it cannot vouch for (another type, a broken rule) raises ``_NotChecked``, and the
# caller validates the table through ``validate_table`` instead, which gives the error (or the result)
# exactly as before. Tests hold the two paths equal.


class _NotChecked(Exception):
    """Internal: the Arrow path does not vouch for a table; ``validate_table`` decides (and words any error)."""


_US_PER_DAY = 86_400_000_000
_NAT = np.iinfo(np.int64).min
#: Typed timestamps outside this range (microseconds since 1970) are left to the pandas path.
_TYPED_RANGE_US = (int(pd.Timestamp("1678-01-01").value // 1000), int(pd.Timestamp("2262-01-01").value // 1000))
_UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}


def _arrow_text(arr, *, whole_numbers: bool = False):
    """A text (or dictionary-of-text) column as Arrow strings; integer ids with no missing value as their decimal text."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        return arr.cast(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr
    if pa.types.is_string_view(t):
        return arr.cast(pa.string())
    if whole_numbers and pa.types.is_integer(t) and arr.null_count == 0:
        return arr.cast(pa.string())  # as pandas' astype("string") writes them: 42 -> "42"
    raise _NotChecked


def _arrow_any(mask) -> bool:
    import pyarrow.compute as pc

    return bool(pc.any(mask).as_py() or False)


def _arrow_column(col: Column, arr):
    """One contract column from Arrow: Arrow strings (text and ids) or a numpy array (float64, datetime64[us])."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.kind == "id":
        text = pc.utf8_trim_whitespace(_arrow_text(arr, whole_numbers=True))
        empty = pc.equal(text, "")
        if col.nullable:
            return pc.if_else(empty, pa.scalar(None, text.type), text) if _arrow_any(empty) else text
        if text.null_count or _arrow_any(empty):
            raise _NotChecked
        return text
    if col.kind in ("category", "text"):
        text = _arrow_text(arr)
        if col.kind == "category":
            text = pc.utf8_lower(pc.utf8_trim_whitespace(text))
        if not col.nullable and (text.null_count or _arrow_any(pc.equal(pc.utf8_trim_whitespace(text), ""))):
            raise _NotChecked
        if col.allowed is not None and _arrow_any(pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=pa.array(col.allowed, type=text.type))))):
            raise _NotChecked
        return text
    if col.kind in ("timestamp", "date"):
        t = arr.type
        if not pa.types.is_timestamp(t):
            raise _NotChecked
        if t.tz is not None:
            arr = arr.cast(pa.timestamp(t.unit))  # an Arrow timestamp with a zone holds UTC: dropping the zone keeps it
        if arr.null_count and not col.nullable:
            raise _NotChecked
        values = pc.fill_null(arr.cast(pa.int64()), _NAT).to_numpy()
        valid = values != _NAT if arr.null_count else slice(None)  # all rows, without a copy
        scale = _UNIT_US[t.unit]
        if scale is None:  # nanoseconds: taken only when they are whole microseconds
            if (values[valid] % 1000).any():
                raise _NotChecked
            values = np.where(valid, values // 1000, _NAT) if arr.null_count else values // 1000
        elif scale != 1:
            lo, hi = (b // scale for b in _TYPED_RANGE_US)
            if len(values[valid]) and (values[valid].min() < lo or values[valid].max() >= hi):
                raise _NotChecked
            values = np.where(valid, values * scale, _NAT) if arr.null_count else values * scale
        if len(values[valid]) and (values[valid].min() < _TYPED_RANGE_US[0] or values[valid].max() >= _TYPED_RANGE_US[1]):
            raise _NotChecked
        if col.kind == "date":
            values = np.where(valid, values - values % _US_PER_DAY, _NAT) if arr.null_count else values - values % _US_PER_DAY
        return _owned(values).view("datetime64[us]")
    # numbers and counts
    t = arr.type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        raise _NotChecked
    values = _owned(pc.fill_null(arr.cast(pa.float64(), safe=False), np.nan).to_numpy())
    if np.isinf(values).any():
        raise _NotChecked
    if not col.nullable and np.isnan(values).any():
        raise _NotChecked
    if col.minimum is not None and (values < col.minimum).any():
        raise _NotChecked
    if col.kind == "count" and (values != np.floor(values))[~np.isnan(values)].any():
        raise _NotChecked
    return values


def _repeated_rows(columns: dict, n_rows: int) -> int:
    """How many rows repeat an earlier row exactly: ``DataFrame.duplicated().sum()`` on the validated table
    (missing equals missing, 0.0 equals -0.0). Rows are hashed from their values; only the rows whose hash
    is shared are then compared value by value, so the count is exact."""
    if n_rows < 2:
        return 0
    hashed = np.zeros(n_rows, dtype=np.uint64)
    for values in columns.values():  # one column's key at a time: at 17 million rows each is 136 MB
        hashed ^= _row_key(values).view(np.uint64)
        hashed *= np.uint64(0x9E3779B97F4A7C15)
        hashed ^= hashed >> np.uint64(31)
    ordered = np.sort(hashed)  # at tens of millions of rows a sort beats a hash table of random keys
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    if not len(repeated):
        return 0
    shared = np.isin(hashed, np.unique(repeated))
    return int(pd.DataFrame({i: _row_key(values)[shared] for i, values in enumerate(columns.values())}).duplicated().sum())


def _row_key(values) -> np.ndarray:
    """int64 codes of one validated column: equal values, equal codes (0.0 and -0.0 one value, missing one value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        v = np.where(values == 0, 0.0, values)  # -0.0 -> 0.0
        v[np.isnan(v)] = np.nan  # one NaN
        return v.view("int64")
    if isinstance(values, np.ndarray):
        return values.view("int64")  # datetime64: NaT is one value
    encoded = values.dictionary_encode()
    first = encoded.chunk(0).dictionary if encoded.num_chunks else None
    if any(not c.dictionary.equals(first) for c in encoded.chunks[1:]):
        encoded = pa.chunked_array([values.combine_chunks().dictionary_encode()])
    indices = pa.chunked_array([c.indices for c in encoded.chunks], type=encoded.type.index_type)
    return pc.fill_null(indices, -1).to_numpy().astype("int64")


def _all_distinct(values) -> bool:
    """Whether the non-missing values of an Arrow column are distinct. Identifiers often come in order:
    a strictly increasing (or decreasing) column is distinct without hashing millions of strings."""
    import pyarrow.compute as pc

    values = values.drop_null() if values.null_count else values
    n = len(values)
    if n < 2:
        return True
    head, tail = values.slice(0, n - 1), values.slice(1)
    if pc.all(pc.less(head, tail)).as_py() or pc.all(pc.greater(head, tail)).as_py():
        return True
    return pc.count_distinct(values).as_py() == n


def _arrow_rules(table: str, columns: dict, n_rows: int) -> list[str]:
    """``_table_rules`` on the Arrow path's columns: the same notes; a broken rule raises ``_NotChecked``."""
    import pyarrow.compute as pc

    schema = SCHEMAS[table]
    notes = []
    today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize() + pd.Timedelta(days=1)
    for col in schema.columns:
        if col.kind in ("timestamp", "date") and col.name in columns and col.name != "end_date":
            values = columns[col.name]
            future = int((values >= today.to_datetime64()).sum())
            if future:
                notes.append(f"{table}.{col.name}: {future:,} rows are dated after today; kept (check the export's clock or time zone)")
            ancient = int((values < EARLIEST_DATE.to_datetime64()).sum())  # NaT compares False, as in pandas
            if ancient:
                notes.append(f"{table}.{col.name}: {ancient:,} rows are dated before {EARLIEST_DATE:%Y-%m-%d} (placeholder dates?); kept")
    if table in ("transactions", "surveys", "product_events", "marketing_spend"):
        # a column of distinct identifiers (checked above) leaves no row equal to another
        unique_key = any(c.unique and c.name in columns and columns[c.name].null_count == 0 for c in schema.columns)
        duplicated = 0 if unique_key else _repeated_rows(columns, n_rows)
        if duplicated:
            notes.append(f"{table}: {duplicated:,} rows repeat another row exactly; kept (check the export was not loaded twice)")
    if table == "surveys":
        survey, score = columns["survey"], columns["score"]
        for name, (low, high) in SURVEY_SCALES.items():
            rows = pc.fill_null(pc.equal(survey, name), False).to_numpy(zero_copy_only=False)
            s = score[rows]
            s = s[~np.isnan(s)]
            if ((s < low) | (s > high) | (s != np.floor(s))).any():
                raise _NotChecked
        n_missing = int(np.isnan(score).sum())
        if n_missing:
            notes.append(f"surveys: {n_missing:,} answers have no score (kept; metrics exclude and count them)")
    if table == "transactions":
        amount = columns["amount"]
        n_refunds = int((amount < 0).sum())
        if n_refunds:
            notes.append(f"transactions: {n_refunds:,} refunds (negative amounts) kept; they are not purchases")
        n_zero = int((amount == 0).sum())
        if n_zero:
            notes.append(f"transactions: {n_zero:,} zero-amount orders kept as purchases")
    if table == "subscriptions" and "end_date" in columns:
        if (columns["end_date"] < columns["start_date"]).any():  # NaT compares False
            raise _NotChecked
    return notes


def _validate_arrow(table: str, source, *, mapping: dict[str, str] | None = None) -> tuple[dict, int, list[str]]:
    """``validate_table`` for an Arrow table: ``(columns, rows, notes)``, the columns in contract order as Arrow
    strings (ids, text) or numpy arrays (float64, datetime64[us]); raises ``_NotChecked`` where it cannot vouch.

    ``source`` is a ``pyarrow.Table`` or a callable ``columns -> pyarrow.Table`` with a ``column_names``
    attribute (so that only the contract's columns are read from a file).
    """
    import pyarrow.compute as pc

    schema = SCHEMAS[table]
    names = list(source.column_names)
    rename = dict(mapping or {})
    contract = {c.name for c in schema.columns}
    if set(rename.values()) - contract or set(rename) - set(names):
        raise _NotChecked  # validate_table words the error
    renamed = [rename.get(n, n) for n in names]
    if len(set(renamed)) != len(renamed) or any(c not in renamed for c in schema.required):
        raise _NotChecked
    notes = []
    extra = [c for c in renamed if c not in contract]
    if extra:
        notes.append(f"{table}: ignored {len(extra)} column(s) outside the contract: {', '.join(map(str, extra))}")
    wanted = [(col, names[renamed.index(col.name)]) for col in schema.columns if col.name in renamed]
    arrow = source if not callable(source) else source([raw for _, raw in wanted])
    n_rows = arrow.num_rows
    columns = {}
    for col, raw in wanted:
        columns[col.name] = _arrow_column(col, arrow.column(raw))
        arrow = arrow.drop_columns([raw])  # let the source column go as soon as it is parsed
    del arrow
    for col in schema.columns:
        if col.unique and col.name in columns:
            if not _all_distinct(columns[col.name]):
                raise _NotChecked
    notes += _arrow_rules(table, columns, n_rows)
    return columns, n_rows, notes


def _columns_frame(table: str, columns: dict, n_rows: int) -> pd.DataFrame:
    """The pandas table ``validate_table`` returns, from the Arrow path's columns: text as ``TEXT`` over the
    Arrow strings themselves (no copy of the characters), timestamps datetime64[us], numbers float64.
    ``columns`` is emptied on the way."""
    out = {}
    for name in list(columns):
        values = columns.pop(name)
        out[name] = values if isinstance(values, np.ndarray) else pd.Series(TEXT.__from_arrow__(values), copy=False)
    return pd.DataFrame(out, index=pd.RangeIndex(n_rows), copy=False)


def _table_frame(table: str, arrow, mapping=None) -> pd.DataFrame:
    """``_columns_frame`` for a validated table stored in Arrow (a report run's copy): the same frame ``load`` gave.

    ``mapping``: the writable copy-on-write memory map (``mmap.ACCESS_COPY``)
    that ``arrow`` was read from without copying. A timestamp or float64
    column with no missing value in one chunk then becomes a NumPy array over
    the mapping itself: writable as every pandas column, while its pages stay
    the file's (shared by every kernel of a run, and given back by the system
    when memory is short) until a notebook writes to them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {}
    for name in arrow.column_names:
        values = arrow.column(name)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            columns[name] = values
        elif pa.types.is_timestamp(values.type):
            unit = f"datetime64[{values.type.unit}]"
            view = _mapped_view(values, mapping, unit)
            columns[name] = view if view is not None else _owned(pc.fill_null(values.cast(pa.int64()), _NAT).to_numpy()).view(unit)
        elif pa.types.is_floating(values.type):
            view = _mapped_view(values, mapping, "float64")
            columns[name] = view if view is not None else _owned(pc.fill_null(values, np.nan).to_numpy())
        else:  # a column with no value at all (null type) and anything else: as pyarrow converts it
            columns[name] = _owned(values.to_pandas().to_numpy())
    return _columns_frame(table, columns, arrow.num_rows)


def _mapped_view(values, mapping, dtype: str) -> np.ndarray | None:
    """The values of a one-chunk, 8-byte, null-free Arrow column as a NumPy array over ``mapping`` (no copy); None when
    it is not that, or its data is not inside the mapping (the reader copied it)."""
    if mapping is None or values.type.bit_width != 64 or values.num_chunks != 1 or values.null_count:
        return None
    chunk = values.chunk(0)
    data = chunk.buffers()[1]
    base = np.frombuffer(mapping, np.uint8).ctypes.data
    start = data.address - base + chunk.offset * 8
    if start < 0 or start + 8 * len(chunk) > len(mapping):
        return None
    return np.frombuffer(mapping, dtype=dtype, count=len(chunk), offset=start)


def _owned(values: np.ndarray) -> np.ndarray:
    """``values``, copied when it is a read-only view of an Arrow buffer (a pandas column must be writable)."""
    return values if values.flags.writeable else values.copy()


def _columns_table(columns: dict, n_rows: int):
    """The Arrow path's columns as one ``pyarrow.Table`` (ids and text as strings, timestamp[us], float64)."""
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind == "M":
            arrays[name] = pa.array(values, type=pa.timestamp("us"), from_pandas=True)  # NaT -> null
        elif isinstance(values, np.ndarray):
            arrays[name] = pa.array(values, type=pa.float64())
        else:
            arrays[name] = values
    return pa.table(arrays)


def _reference_notes(customers: tuple, name: str, ids, when: np.ndarray) -> tuple[int, str | None, int]:
    """(rows naming an unknown customer, a note on them, rows dated before their customer's signup_date) for one table.

    ``customers`` is ``(ids as Arrow strings, signup dates as datetime64[us])``; ``ids`` Arrow strings;
    ``when`` the table's time column (datetime64[us]). The counts of ``check_references``, in Arrow.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    known, signup = customers
    ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, type=pa.string())
    pos = pc.index_in(ids, value_set=known.cast(ids.type))
    n_unknown = pos.null_count
    note = None
    if n_unknown:
        examples = pc.unique(ids.filter(pc.is_null(pos))).slice(0, 3).to_pylist()
        note = (f"{name}: {n_unknown:,} of {len(ids):,} rows name a customer_id not in customers "
                f"(e.g. {', '.join(map(repr, examples))}); kept")
    pos = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False)
    found = pos >= 0
    day = when.view("int64")
    day = day - day % _US_PER_DAY
    early = found & (day < signup.view("int64")[np.where(found, pos, 0)])
    return n_unknown, note, int(early.sum())


# ----------------------------------------------------------------------------- writing


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as Parquet with microsecond timestamps (Spark refuses nanoseconds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=False)
    return path


# ----------------------------------------------------------------------------- profiles


def profile_tables(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per table: rows, distinct customers, first and last date, share of missing cells (%)."""
    rows = []
    for name, df in tables.items():
        time_col = SCHEMAS[name].time_column
        cells = df.size
        rows.append(
            {
                "table": name,
                "rows": len(df),
                "customers": df["customer_id"].nunique() if "customer_id" in df.columns else pd.NA,
                "first": df[time_col].min().date() if len(df) else pd.NA,
                "last": df[time_col].max().date() if len(df) else pd.NA,
                "missing_cells_pct": round(100 * float(df.isna().sum().sum()) / cells, 2) if cells else 0.0,
            }
        )
    return pd.DataFrame(rows).set_index("table")


def missing_values(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Missing values per table and column (only columns with any), as count and % of rows."""
    rows = []
    for name, df in tables.items():
        for col, n in df.isna().sum().items():
            if n:
                rows.append({"table": name, "column": col, "missing": int(n), "missing_pct": round(100 * n / len(df), 2)})
    return pd.DataFrame(rows, columns=["table", "column", "missing", "missing_pct"])


def monthly_counts(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Rows and distinct customers per calendar month of the table's time column (aggregated by the engine)."""
    from .engine import as_table, execute

    time_col = SCHEMAS[table].time_column
    t = as_table(df, [time_col] + (["customer_id"] if "customer_id" in df.columns else []))  # only what is counted
    month = t[time_col].truncate("M").name("month")
    agg = {"rows": t.count()}
    if "customer_id" in df.columns:
        agg["customers"] = t.customer_id.nunique()
    out = execute(t.group_by(month).aggregate(**agg).order_by("month"))
    out["month"] = pd.to_datetime(out["month"]).dt.to_period("M")
    return out.set_index("month")


def per_customer_counts(df: pd.DataFrame) -> pd.Series:
    """Rows per customer (aggregated by the engine), as a Series indexed by customer_id."""
    from .engine import as_table, execute

    t = as_table(df, ["customer_id"])
    out = execute(t.group_by("customer_id").aggregate(rows=t.count()))
    return out.set_index("customer_id")["rows"].sort_index()


def distribution(values: pd.Series, *, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95)) -> pd.Series:
    """Count, missing, mean, min, the given quantiles and max of a numeric series."""
    v = pd.Series(values, dtype="float64")
    out = {"count": int(v.notna().sum()), "missing": int(v.isna().sum()), "mean": v.mean(), "min": v.min()}
    out.update({f"p{round(q * 100):02d}": v.quantile(q) for q in quantiles})
    out["max"] = v.max()
    return pd.Series(out)
