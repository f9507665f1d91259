"""Datasets: load any source into validated tables, the bundled real data, and the synthetic company.

``load(source)`` is the one entry point notebooks use. A source is

* ``"sample"``: the synthetic company (``generate_sample``), generated on
  first use into ``data/sample/`` and read from there afterwards;
* ``"cdnow"``: the real CDNOW transaction log (23,570 customers who first
  bought in the first quarter of 1997, 69,659 orders to 1998-06-30) that the
  ``lifetimes`` package ships in its installed files;
* a folder holding files named after the tables (``transactions.csv``,
  ``customers.parquet``, ...);
* a DuckDB database file (``*.duckdb`` / ``*.db``) holding tables named after
  the contract tables.

CSV files and DuckDB tables are read through Ibis on an embedded DuckDB.
Parquet files are read by pyarrow, only the contract's columns, and checked in
Arrow and numpy (``data._validate_arrow``), one table at a time: at a million
customers the pandas way took two minutes and 9 GB. A column type or a broken
rule that path does not take sends the table the reference way (DuckDB reads
it, ``validate_table`` checks it), so results and error messages are the same.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import data
from .data import TABLES, ClmError, SchemaError, check_references, validate_table, write_table

__all__ = ["Dataset", "load", "from_frames", "generate_sample", "data_dir", "CDNOW_PATH"]

#: Default size and seed of the bundled synthetic company.
SAMPLE_CUSTOMERS = 20_000
SAMPLE_SEED = 2024

_FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv", ".txt")
_DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")


def _cdnow_path(name: str) -> Path:
    """A file the lifetimes wheel ships next to ``lifetimes.datasets``, found without importing lifetimes (slow: autograd, SciPy)."""
    import importlib.util

    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise ClmError("the CDNOW data ships with the lifetimes package, which is not installed (pip install lifetimes)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / name


CDNOW_PATH = _cdnow_path("CDNOW_master.txt")


def data_dir() -> Path:
    """Where generated datasets live: ``$CLM_DATA_DIR``, else ``data/`` of the source tree, else ``~/.cache/clm``."""
    if os.environ.get("CLM_DATA_DIR"):
        return Path(os.environ["CLM_DATA_DIR"])
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "data").is_dir():
        return repo / "data"
    return Path.home() / ".cache" / "clm"


@dataclass
class Dataset:
    """The seven contract tables of one source (a table the source lacks is ``None``).

    ``notes`` lists what validation kept but counted (refunds, unanswered
    surveys, ignored columns); ``truth`` holds the generating parameters of a
    synthetic dataset (empty for real data).
    """

    name: str
    customers: pd.DataFrame | None = None
    transactions: pd.DataFrame | None = None
    marketing_spend: pd.DataFrame | None = None
    email_events: pd.DataFrame | None = None
    product_events: pd.DataFrame | None = None
    surveys: pd.DataFrame | None = None
    subscriptions: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    truth: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables this source has, by name, in contract order."""
        return {t: getattr(self, t) for t in TABLES if getattr(self, t) is not None}

    @property
    def start(self) -> pd.Timestamp:
        """The earliest date in any table."""
        return min(self._extreme(t, data.SCHEMAS[t].time_column, "min") for t in self._present()).normalize()

    @property
    def end(self) -> pd.Timestamp:
        """The last day covered: the latest event date in any table (the natural observation end)."""
        ends = []
        for t in self._present():
            columns = self._columns(t)
            for col in data.SCHEMAS[t].columns:
                if col.kind in ("timestamp", "date") and col.name in columns:
                    ends.append(self._extreme(t, col.name, "max"))
        return max(e for e in ends if pd.notna(e)).normalize()

    def _present(self) -> list[str]:
        return list(self.tables())

    def _columns(self, table: str) -> list[str]:
        return list(getattr(self, table).columns)

    def _extreme(self, table: str, column: str, how: str) -> pd.Timestamp:
        return getattr(getattr(self, table)[column], how)()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={len(df):,}" for t, df in self.tables().items())
        return f"Dataset({self.name!r}: {sizes})"


def from_frames(name: str = "frames", *, mapping: dict[str, dict[str, str]] | None = None, truth: dict | None = None, **frames) -> Dataset:
    """Validate DataFrames given by table name into a Dataset (``from_frames(transactions=df)``)."""
    unknown = sorted(set(frames) - set(TABLES))
    if unknown:
        raise SchemaError(f"unknown table(s) {unknown}; tables are {list(TABLES)}")
    mapping = mapping or {}
    clean, notes = {}, []
    for table in TABLES:
        if frames.get(table) is not None:
            clean[table], table_notes = validate_table(table, frames[table], mapping=mapping.get(table))
            notes += table_notes
    if "customers" not in clean and "transactions" in clean:
        clean["customers"] = _customers_from_transactions(clean["transactions"])
        notes.append(f"customers: derived from transactions ({len(clean['customers']):,} customers, signup_date = first order day)")
    notes += check_references(clean)
    return Dataset(name=name, notes=notes, truth=truth or {}, **clean)


def _customers_from_transactions(tx: pd.DataFrame) -> pd.DataFrame:
    first = tx.groupby("customer_id", sort=True)["timestamp"].min().dt.normalize()
    return pd.DataFrame({"customer_id": pd.array(first.index, dtype=data.TEXT), "signup_date": first.to_numpy()})


def load(source: str | os.PathLike = "sample", *, mapping: dict[str, dict[str, str]] | None = None) -> Dataset:
    """Load and validate a source into a ``Dataset``.

    ``source`` is ``"sample"``, ``"cdnow"``, a folder of CSV/Parquet files named
    after the tables, or a DuckDB database file. ``mapping`` maps, per table,
    the source's column names onto the contract's:
    ``{"transactions": {"order_value": "amount", "client": "customer_id"}}``.
    Raises ``SchemaError`` when a table breaks its contract.
    """
    cached = _from_run_cache(source) if mapping is None else None
    if cached is not None:
        return cached
    if isinstance(source, str) and source == "sample":
        return load(ensure_sample(), mapping=mapping)
    if isinstance(source, str) and source == "cdnow":
        return load_cdnow()
    path, frames, read_notes, truth = _open_source(source)
    if path.is_dir():  # tables are validated one at a time, each freed from memory before the next
        tables = {}

        def keep(table, checked):
            tables[table] = checked.frame()

        notes = read_notes + _check_tables(frames, mapping, keep)
        return Dataset(name=path.name, notes=notes, truth=truth, **tables)
    ds = from_frames(path.name, mapping=mapping, truth=truth, **frames)
    ds.notes[:0] = read_notes
    return ds


def _open_source(source) -> tuple[Path, dict, list[str], dict]:
    """A folder or DuckDB source: its path, its tables (pandas frames, or Parquet files not read yet), read notes, truth."""
    path = Path(source).expanduser()
    read_notes = []
    if path.is_dir():
        frames, read_notes = _read_folder(path)
        truth_file = path / "ground_truth.json"
        truth = json.loads(truth_file.read_text()) if truth_file.exists() else {}
    elif path.is_file() and path.suffix.lower() in _DUCKDB_SUFFIXES:
        frames, truth = _read_duckdb(path), {}
    elif path.exists():
        raise SchemaError(f"{path}: a source must be a folder of table files or a DuckDB database ({', '.join(_DUCKDB_SUFFIXES)})")
    else:
        raise SchemaError(f"source must be 'sample', 'cdnow', a folder or a DuckDB file; {str(source)!r} does not exist")
    if not frames:
        raise SchemaError(
            f"{path}: no table found; expected files or tables named after the tables {list(TABLES)} "
            f"(e.g. transactions.csv, customers.parquet)"
        )
    return path, frames, read_notes, truth


class _Checked:
    """One validated table: the Arrow path's columns, or the frame ``validate_table`` returned."""

    def __init__(self, table: str, columns: dict | None = None, n_rows: int = 0, df: pd.DataFrame | None = None):
        self.table, self.columns, self.n_rows, self.df = table, columns, n_rows, df

    def frame(self) -> pd.DataFrame:
        """The table in pandas (once: the Arrow columns are let go on the way)."""
        return self.df if self.df is not None else data._columns_frame(self.table, self.columns, self.n_rows)

    def arrow(self):
        import pyarrow as pa

        if self.df is not None:
            return pa.Table.from_pandas(self.df, preserve_index=False)
        return data._columns_table(self.columns, self.n_rows)

    def ids_and_times(self, time_column: str):
        """customer_id (Arrow strings, or Python strings) and the time column (datetime64[us])."""
        if self.df is not None:
            return self.df["customer_id"].to_numpy(dtype=object), self.df[time_column].to_numpy().astype("datetime64[us]")
        return self.columns["customer_id"], self.columns[time_column]


def _check_table(table: str, frame, mapping: dict[str, str] | None) -> tuple[_Checked, list[str]]:
    """Validate one table: a Parquet file through the Arrow path where it can vouch, else through ``validate_table``."""
    import pyarrow as pa

    if isinstance(frame, _ParquetFile):
        try:
            columns, n_rows, notes = data._validate_arrow(table, frame, mapping=mapping)
            return _Checked(table, columns, n_rows), notes
        except (data._NotChecked, pa.ArrowException, OSError):  # or a file pyarrow reads otherwise than DuckDB: the reference path decides
            frame = frame.to_pandas()
    clean, notes = validate_table(table, frame, mapping=mapping)
    return _Checked(table, df=clean), notes


def _check_tables(frames: dict, mapping: dict | None, keep) -> list[str]:
    """Validate the tables in contract order, as ``from_frames`` does, handing each to ``keep(table, checked)`` and
    letting it go before the next; return the notes in ``from_frames``' order (tables, derived customers, references)."""
    import pyarrow as pa

    mapping = mapping or {}
    notes, derived, references = [], [], []
    customers = None  # (ids as Arrow strings, signup dates)
    for table in TABLES:
        frame = frames.pop(table, None)
        if frame is None:
            continue
        checked, table_notes = _check_table(table, frame, mapping.get(table))
        del frame
        notes += table_notes
        if table == "customers":
            ids, signup = checked.ids_and_times("signup_date")
            ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(ids, type=pa.string())
            customers = (ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids, signup)
        if table == "transactions" and customers is None:
            first = _customers_from_checked(checked)
            derived.append(f"customers: derived from transactions ({first.n_rows:,} customers, signup_date = first order day)")
            customers = (first.columns["customer_id"].combine_chunks(), first.columns["signup_date"])
            keep("customers", first)
        if table != "customers" and customers is not None and "customer_id" in data.SCHEMAS[table].required and _rows(checked):
            ids, when = checked.ids_and_times(data.SCHEMAS[table].time_column)
            n_unknown, note, n_early = data._reference_notes(customers, table, ids, when)
            del ids, when
            if note:
                references.append(note)
            if n_early:
                references.append(f"{table}: {n_early:,} rows are dated before the customer's signup_date; kept")
        keep(table, checked)
        del checked
    pa.default_memory_pool().release_unused()  # hand the freed Arrow buffers back to the system, not to the next table
    return notes + derived + references


def _rows(checked: _Checked) -> int:
    return len(checked.df) if checked.df is not None else checked.n_rows


def _customers_from_checked(checked: _Checked) -> _Checked:
    """``_customers_from_transactions`` for a validated transactions table (in Arrow when it came the Arrow way)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if checked.df is not None:
        first = _customers_from_transactions(checked.df)
        return _Checked("customers", {"customer_id": pa.chunked_array([pa.array(first["customer_id"].to_numpy(dtype=object), type=pa.string())]),
                         "signup_date": first["signup_date"].to_numpy()}, len(first))
    ts = checked.columns["timestamp"].view("int64")
    first = pa.table({"customer_id": checked.columns["customer_id"], "t": ts}).group_by("customer_id").aggregate([("t", "min")])
    first = first.take(pc.sort_indices(first, sort_keys=[("customer_id", "ascending")]))
    day = first["t_min"].to_numpy()
    day = (day - day % data._US_PER_DAY).view("datetime64[us]")
    return _Checked("customers", {"customer_id": first["customer_id"], "signup_date": day}, first.num_rows)


class _CachedTable:
    """A table of a report run's validated copy, read into pandas on first use (``_CachedDataset``)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, ds, owner=None):
        if ds is None:
            return None
        path = ds.__dict__.get("_files", {}).get(self.name)
        df = None if path is None else _read_cached(self.name, path)
        ds.__dict__[self.name] = df  # from now on a plain attribute, which assignment replaces as usual
        return df


class _CachedDataset(Dataset):
    """A ``Dataset`` read back from a report run's validated copy: a table becomes a DataFrame when a notebook
    first touches it (a notebook that never reads the e-mail events never holds them); ``start``, ``end`` and
    the repr read the memory-mapped files without converting them."""

    customers = _CachedTable()
    transactions = _CachedTable()
    marketing_spend = _CachedTable()
    email_events = _CachedTable()
    product_events = _CachedTable()
    surveys = _CachedTable()
    subscriptions = _CachedTable()

    @classmethod
    def from_files(cls, name: str, notes: list[str], truth: dict, files: dict[str, Path]) -> "_CachedDataset":
        ds = cls(name=name, notes=notes, truth=truth)
        ds.__dict__["_files"] = dict(files)
        for table in files:
            del ds.__dict__[table]  # so that the first read goes through _CachedTable
        return ds

    def _pending(self, table: str) -> Path | None:
        return None if table in self.__dict__ else self.__dict__.get("_files", {}).get(table)

    def _present(self) -> list[str]:
        return [t for t in TABLES if self._pending(t) is not None or getattr(self, t) is not None]

    def _columns(self, table: str) -> list[str]:
        path = self._pending(table)
        if path is None:
            return super()._columns(table)
        return _cached_schema(path).names

    def _extreme(self, table: str, column: str, how: str) -> pd.Timestamp:
        path = self._pending(table)
        if path is None:
            return super()._extreme(table, column, how)
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.feather as feather

        # the whole table, mapped, then the column: asking read_table for `columns` copies the file's data into memory
        # (a million customers' e-mail events: 0.9 GB at each ``ds.end``, kept by Arrow's allocator afterwards)
        values = feather.read_table(path, memory_map=True).column(column)
        value = pc.min_max(values)[how].cast("int64").as_py() if len(values) else None
        return pd.NaT if value is None else pd.Timestamp(np.datetime64(value, "us"))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={_cached_rows(self._pending(t)) if self._pending(t) else len(getattr(self, t)):,}" for t in self._present())
        return f"Dataset({self.name!r}: {sizes})"


def _cached_schema(path: Path):
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


def _cached_rows(path: Path) -> int:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def _read_cached(table: str, path: Path) -> pd.DataFrame:
    """A table of the run's copy as a DataFrame: text over the file's strings, full numeric columns over its pages.

    The file is mapped copy-on-write: nothing is read until used, a page a
    notebook never writes stays the file's (shared by the run's kernels), and
    a write changes this kernel's copy only.
    """
    import mmap

    import pyarrow as pa

    with open(path, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return data._table_frame(table, pa.ipc.open_file(pa.py_buffer(mapping)).read_all(), mapping)


# ----------------------------------------------------------------------------- the report run's validated copy

#: Environment variable naming a folder written by ``write_run_cache``; set by the report runner for its kernels.
RUN_CACHE_ENV = "CLM_DATASET_CACHE"


def write_run_cache(source, folder: str | os.PathLike) -> Path:
    """Load and validate ``source`` once, and write the validated tables to ``folder`` (Arrow IPC files) for a report run.

    Every notebook of a run loads the same source; with ``CLM_DATASET_CACHE``
    naming this folder, ``load(source)`` (same source, no mapping) reads the
    validated tables back instead of reading and validating again. The copy
    lives in the run's temporary folder and goes with it.
    """
    import pyarrow as pa
    import pyarrow.feather as feather

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    resolved = ensure_sample() if isinstance(source, str) and source == "sample" else source
    is_folder = not (isinstance(source, str) and source == "cdnow") and Path(resolved).expanduser().is_dir()
    if is_folder and _from_run_cache(source) is None:
        # each table is validated, written and let go before the next; no pandas copy of a Parquet table is made
        path, frames, read_notes, truth = _open_source(resolved)
        written = []

        def keep(table, checked):
            _write_cached(_large_strings(checked.arrow()), folder / f"{table}.arrow")
            written.append(table)

        notes = read_notes + _check_tables(frames, None, keep)
        name, tables = path.name, [t for t in TABLES if t in written]
    else:
        ds = load(source)
        for table, df in ds.tables().items():
            _write_cached(_large_strings(pa.Table.from_pandas(df, preserve_index=False)), folder / f"{table}.arrow")
        name, notes, truth, tables = ds.name, ds.notes, ds.truth, list(ds.tables())
    manifest = {"source": str(source), "name": name, "notes": notes, "truth": truth, "tables": tables}
    (folder / "manifest.json").write_text(json.dumps(manifest, default=str))
    return folder


def _write_cached(table, path: Path) -> None:
    """One table of the run's copy: uncompressed, one record batch (so that each column is one stretch of the file,
    which a kernel maps as a pandas column without copying it; see ``_read_cached``)."""
    import pyarrow.feather as feather

    table = table.combine_chunks()
    feather.write_feather(table, path, compression="uncompressed", chunksize=max(table.num_rows, 1))


def _large_strings(table):
    """``table`` with its text columns as Arrow ``large_string``, the type pandas' ``TEXT`` columns hold: read back
    memory-mapped, a column then becomes a pandas column without a copy."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _from_run_cache(source) -> Dataset | None:
    folder = os.environ.get(RUN_CACHE_ENV)
    if not folder:
        return None
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("source") != str(source):
        return None
    files = {t: Path(folder) / f"{t}.arrow" for t in manifest["tables"]}
    return _CachedDataset.from_files(manifest["name"], list(manifest["notes"]), manifest["truth"], files)


def _table_file(folder: Path, table: str) -> Path | None:
    found = [folder / f"{table}{suffix}" for suffix in _FILE_SUFFIXES if (folder / f"{table}{suffix}").exists()]
    if len(found) > 1:
        raise SchemaError(f"{table}: more than one file in {folder} ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _read_folder(folder: Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Open every table file in ``folder``: CSV through DuckDB as text (parsed by the contract, not guessed), Parquet with pyarrow.

    A Parquet file is opened here (its schema read) and its columns are read
    and checked in Arrow by ``data`` (``_ParquetFile``); a column type that
    path does not take, or any broken rule, sends the table through DuckDB
    and ``validate_table``, so errors read the same either way.

    How a CSV file's layout and encoding are found (each non-UTF-8 case adds a note):

    * the delimiter (comma, semicolon, tab, pipe) is detected by DuckDB's
      sniffer; the first line is the header;
    * UTF-8, with or without a byte-order mark, is read as is;
    * a UTF-16 file (it starts with a UTF-16 byte-order mark) is read as UTF-16;
    * a file that is not valid UTF-8 is read as Latin-1 (ISO 8859-1) and, when
      it holds bytes that Latin-1 leaves undefined (0x80-0x9F: the euro sign
      and curly quotes of Windows exports), as Windows-1252;
    * a file that none of these decode, an empty file (not even a header
      row) and a file DuckDB cannot parse raise ``SchemaError`` naming the
      table and the file.

    A file named after a table in any other format (``transactions.xlsx``,
    ``customers.json``) raises ``SchemaError`` when the table has no CSV or
    Parquet file, and is ignored with a note when it has one.
    """
    con = _OnFirstUse()
    frames, notes = {}, []
    for table in TABLES:
        path = _table_file(folder, table)
        others = sorted(p.name for p in folder.glob(f"{table}.*") if p.is_file()
                        and not p.name.lower().endswith(_FILE_SUFFIXES))
        if path is None:
            if others:
                raise SchemaError(f"{table}: {', '.join(others)} is not a CSV or Parquet file; export the table as "
                                  f"CSV (UTF-8) or Parquet ({table}.csv or {table}.parquet)")
            continue
        if others:
            notes.append(f"{table}: ignored {', '.join(others)} (not CSV or Parquet); read {path.name}")
        is_parquet = path.suffix in (".parquet", ".pq")
        try:
            if is_parquet:
                frames[table] = _ParquetFile.open(con, table, path)
                continue
            frames[table], note = _read_csv(con, table, path)
            if note:
                notes.append(note)
        except SchemaError:
            raise
        except Exception as exc:  # DuckDB's own message says what is wrong with the file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SchemaError(f"{table}: cannot read {path} as {'Parquet' if is_parquet else 'CSV'}: {first}") from exc
    return frames, notes


class _OnFirstUse:
    """``engine.default_backend()``, connected when first used: a folder of Parquet files that pass validation is read
    by pyarrow alone, without importing Ibis' DuckDB backend or starting DuckDB (0.6 s at the start of a report run)."""

    def __init__(self):
        self._con = None

    def __getattr__(self, name):
        if self._con is None:
            from .engine import default_backend

            self._con = default_backend()
        return getattr(self._con, name)


class _ParquetFile:
    """A Parquet table file whose schema has been read; its columns are read when validated (``data._validate_arrow``).

    ``to_pandas()`` reads it the reference way (DuckDB, through Ibis), for ``validate_table``.
    """

    def __init__(self, con, table: str, path: Path, column_names: list[str]):
        self.con, self.table, self.path, self.column_names = con, table, path, column_names

    @classmethod
    def open(cls, con, table: str, path: Path):
        """The file, once pyarrow has read its schema; else the frame DuckDB reads (or DuckDB's error, as always)."""
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception:
            return con.read_parquet(path).to_pandas()
        return cls(con, table, path, names)

    def __call__(self, columns: list[str]):
        import pyarrow.parquet as pq

        return pq.read_table(self.path, columns=columns)

    def to_pandas(self) -> pd.DataFrame:
        try:
            return self.con.read_parquet(self.path).to_pandas()
        except Exception as exc:  # as in _read_folder
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SchemaError(f"{self.table}: cannot read {self.path} as Parquet: {first}") from exc


def _read_csv(con, table: str, path: Path) -> tuple[pd.DataFrame, str | None]:
    """One CSV file as text columns, and a note when it was not UTF-8 (the rules are in ``_read_folder``)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head.lstrip(b"\xef\xbb\xbf").strip():
        raise SchemaError(f"{table}: {path.name} is empty (not even a header row); write at least the header "
                          f"{', '.join(data.SCHEMAS[table].required)}")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _read_transcoded(con, path, "utf-16"), f"{table}: {path.name} is UTF-16; read as UTF-16"
    try:
        # all_varchar: every column arrives as text, so the contract (not
        # DuckDB's sniffer) decides what is a number, a date or an id.
        return con.read_csv(path, all_varchar=True, header=True).to_pandas(), None
    except Exception as exc:
        if "not utf-8 encoded" not in str(exc):
            raise
    try:
        return (con.read_csv(path, all_varchar=True, header=True, encoding="latin-1").to_pandas(),
                f"{table}: {path.name} is not UTF-8; read as Latin-1")
    except Exception as exc:
        if "not latin-1 encoded" not in str(exc):
            raise
    try:
        return _read_transcoded(con, path, "cp1252"), f"{table}: {path.name} is not UTF-8; read as Windows-1252"
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{table}: {path.name} is in none of the encodings tried (UTF-8, UTF-16 with a byte-order "
                          f"mark, Latin-1, Windows-1252): it holds the byte {exc.object[exc.start:exc.start + 1]!r}, "
                          f"which none of them defines; save it as UTF-8") from exc


def _read_transcoded(con, path: Path, encoding: str) -> pd.DataFrame:
    """Read a CSV in ``encoding`` by re-encoding it, chunk by chunk, into a temporary UTF-8 copy that DuckDB reads."""
    with tempfile.TemporaryDirectory(prefix="clm-csv-") as tmp:
        copy = Path(tmp) / path.name
        with open(path, encoding=encoding, newline="") as src, open(copy, "w", encoding="utf-8", newline="") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return con.read_csv(copy, all_varchar=True, header=True).to_pandas()


def _read_duckdb(path: Path) -> dict[str, pd.DataFrame]:
    import ibis

    con = ibis.duckdb.connect(str(path), read_only=True)
    try:
        present = set(con.list_tables())
        return {t: con.table(t).to_pandas() for t in TABLES if t in present}
    finally:
        con.disconnect()


# ----------------------------------------------------------------------------- CDNOW


def load_cdnow(*, sample: bool = False) -> Dataset:
    """The CDNOW transaction log shipped by ``lifetimes`` (no download).

    Full log (``CDNOW_master.txt``): 23,570 customers who made their first
    purchase at CDNOW in the first quarter of 1997, 69,659 order rows from
    1997-01-01 to 1998-06-30; each row is a customer, a day, a number of CDs
    and a dollar value (80 rows have a value of 0 and are kept). With
    ``sample=True``, the 2,357-customer 1/10th sample that Fader, Hardie & Lee
    (2005) used (``CDNOW_sample.txt``, 6,919 rows). Fills ``transactions``
    and ``customers`` (signup_date = first purchase day).
    """
    if sample:
        raw = pd.read_csv(_cdnow_path("CDNOW_sample.txt"), sep=r"\s+", header=None, dtype=str,
                          names=["customer_id", "sample_id", "date", "quantity", "amount"])
        name = "cdnow_sample"
    else:
        raw = pd.read_csv(CDNOW_PATH, sep=r"\s+", header=0, dtype=str, names=["customer_id", "date", "quantity", "amount"])
        name = "cdnow"
    tx = pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "timestamp": pd.to_datetime(raw["date"], format="%Y%m%d").astype("datetime64[us]"),
            "amount": raw["amount"],
        }
    )
    return from_frames(name, transactions=tx)


# ----------------------------------------------------------------------------- synthetic company


def generate_sample(n_customers: int = SAMPLE_CUSTOMERS, *, seed: int = SAMPLE_SEED, out: str | os.PathLike | None = None,
                    start: str = "2022-01-01", end: str = "2024-12-31") -> Path | tuple[dict[str, pd.DataFrame], dict]:
    """Generate the synthetic company; write it to ``out`` (Parquet + ground_truth.json) or return it.

    Deterministic: the same arguments give the same tables. The generating
    processes and their ground truth are documented in ``clm_helpers.synthetic``
    and written to ``ground_truth.json`` next to the tables. The folder is
    written under a temporary name and moved into place when complete, so a
    reader never sees half a dataset.
    """
    from .synthetic import simulate_company

    tables, truth = simulate_company(n_customers, seed=seed, start=start, end=end)
    if out is None:
        return tables, truth
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for table, df in tables.items():
            write_table(df, tmp / f"{table}.parquet")
        (tmp / "ground_truth.json").write_text(json.dumps(truth, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(_sample_readme(n_customers, seed, start, end, tables))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _sample_readme(n_customers, seed, start, end, tables) -> str:
    rows = "\n".join(f"| {t} | {len(df):,} |" for t, df in tables.items())
    return (
        f"# Synthetic company ({n_customers:,} customers, seed {seed}, {start} to {end})\n\n"
        "Generated by `clm sample` (clm_helpers.datasets.generate_sample); do not edit by hand.\n"
        "The generating processes are documented in `clm_helpers/synthetic.py`; their parameters\n"
        "(the ground truth a model should recover) are in `ground_truth.json`.\n\n"
        f"| table | rows |\n|---|---|\n{rows}\n"
    )


def ensure_sample() -> Path:
    """The default sample's folder, generated on first use."""
    folder = data_dir() / "sample"
    if (folder / "ground_truth.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".sample.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # two notebooks starting at once generate it once
        except ImportError:  # Windows: no advisory locks; the atomic rename still protects readers
            pass
        if not (folder / "ground_truth.json").exists():
            generate_sample(out=folder)
    return folder
