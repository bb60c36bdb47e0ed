"""The on-disk index: the one place that spells its layout, schema, facts, rows, checkpoints and publishing.

An index folder holds published generations (`gen-*/`), a `CURRENT` pointer naming the live one, a `.lock` and
`partial/` checkpoints of a build in progress. A generation is four files, and a fifth since the face-rows file:

    faces.parquet   one row per face; row position = FAISS id
    images.parquet  one row per file seen (status faces / noface / failed, with the reason a file failed)
    index.faiss     the vectors of faces.parquet, in row order
    index.json      the facts: schema version, model, detector, dim, counts, root, index type, summary
    faces.rows      per face, in row order, the fixed-width record a query reads for its matches (FACE_ROW: frame,
                    box, blendshapes as bytes): a reader reads (pread) the k rows it needs, never the whole column.
                    Derived from faces.parquet; generations written before it have none (readers derive it then).

A build writes a whole generation into a temp folder, renames it into place, then renames a new `CURRENT` over
the old one: readers see the last good generation until the very last rename, and a killed build leaves it
untouched. The previous generation is kept one build longer, so a reader that has just followed the old pointer
can still open it. Plain Parquet: pandas, duckdb and polars read the tables as they are.

Paths: `path` is the file's path relative to the root, posix, as text. A name that is not valid UTF-8 (possible on
Linux) is shown with its odd bytes as `\\xNN` and its exact bytes are kept in `path_bytes` (null for every other
file), so it round-trips: `fs_path()` gives back the name `os.open` needs. In memory a path is Python's
surrogate-escaped `str` (what `os.walk` returns), and `stored_path()` / `fs_path()` convert both ways.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomicfile import replacing, temp_glob
from .errors import BuildLocked, IndexDamaged, IndexMismatch, IndexMissing, IndexUnwritable
from .faces.bundle import BLENDSHAPE_NAMES

log = logging.getLogger(__name__)

# -- layout --------------------------------------------------------------------------------------------------------
FACES_FILE = "faces.parquet"
IMAGES_FILE = "images.parquet"
INDEX_FILE = "index.faiss"
FACTS_FILE = "index.json"
CURRENT = "CURRENT"
PARTIAL = "partial"
LOCK = ".lock"
FACE_ROWS_FILE = "faces.rows"
GENERATION_FILES = (FACES_FILE, IMAGES_FILE, INDEX_FILE, FACTS_FILE)  # FACE_ROWS_FILE is optional: older ones lack it

# -- schema --------------------------------------------------------------------------------------------------------
SCHEMA_VERSION = 4
N_BLENDSHAPES = len(BLENDSHAPE_NAMES)  # the row schema holds every MediaPipe blendshape score
STATUSES = ("faces", "noface", "failed")
# One record of faces.rows (little-endian, no padding: 4 + 16 + 52 = 72 bytes). Blendshapes only explain matches
# (traits): a byte each (round(score * 255)) is plenty, 4x smaller than float32.
FACE_ROW = np.dtype([("frame", "<i4"), ("box", "<f4", (4,)), ("blendshapes", "u1", (N_BLENDSHAPES,))])
_META = b"memeindex_schema"
_MODEL_META = b"model_id"


def faces_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("path", pa.string()),  # relative to the root, posix; see the module docstring for odd names
        ("path_bytes", pa.binary()),  # the exact name when it is not UTF-8, else null
        ("sha256", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("frame", pa.int32()),
        ("face", pa.int32()),  # face number within its frame, largest first
        ("box", pa.list_(pa.float32(), 4)),  # x0, y0, x1, y1 in the file's own (EXIF-upright) pixels
        ("score", pa.float32()),
        ("blendshapes", pa.list_(pa.float32(), N_BLENDSHAPES)),
        ("embedding", pa.list_(pa.float32(), dim)),
        ("model_id", pa.string()),
        ("template", pa.string()),  # template (near-duplicate group) id; "" until grouped
        ("detector", pa.string()),  # detector version that found this face
    ], metadata={_META: str(SCHEMA_VERSION).encode()})


IMAGES_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("path_bytes", pa.binary()),
    ("sha256", pa.string()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("status", pa.string()),  # faces | noface | failed
    ("faces", pa.int32()),
    ("reason", pa.string()),  # why a file failed; empty otherwise
    ("phash", pa.string()),  # 16 hex chars: 64-bit perceptual hash of the first frame; "" if unknown
    ("dhash", pa.string()),  # 16 hex chars: 64-bit difference hash of the same frame; "" if unknown
    ("template", pa.string()),  # template id; "" until grouped
    ("detector", pa.string()),  # detector version that analysed the file
    ("run_failures", pa.int32()),  # builds in a row whose run, not the file, made it fail (see ImageRow)
], metadata={_META: str(SCHEMA_VERSION).encode()})


# -- paths ---------------------------------------------------------------------------------------------------------
def stored_path(rel: str) -> tuple[str, bytes | None]:
    """(text shown and stored in `path`, exact bytes for `path_bytes` or None) of an in-memory relative path."""
    try:
        rel.encode("utf-8")
        return rel, None
    except UnicodeEncodeError:
        raw = os.fsencode(rel)
        return raw.decode("utf-8", "backslashreplace"), raw


def shown_path(rel: str) -> str:
    """How a path is shown to people in a line of text (logs, tables): a name that is not UTF-8 with `\\xNN`, as
    stored, and so are control characters (a newline in a name would split a `skipping` line or a table row)."""
    return _CONTROL.sub(_escaped, stored_path(rel)[0])


# C0, DEL, C1 (U+0085 is a line break to some terminals) and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(c: re.Match) -> str:
    code = ord(c[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def fs_path(path: str, path_bytes: bytes | None) -> str:
    """The in-memory (surrogate-escaped) relative path of a stored row: what `os.open(root / it)` needs."""
    return os.fsdecode(path_bytes) if path_bytes is not None else path


def row_keys(table: pa.Table) -> list[str]:
    """The in-memory relative path of every row of a faces or images table."""
    paths = table.column("path").to_pylist()
    if "path_bytes" not in table.column_names or table.column("path_bytes").null_count == table.num_rows:
        return paths
    return [fs_path(p, b) for p, b in zip(paths, table.column("path_bytes").to_pylist())]


# -- rows: the one typed constructor of each -----------------------------------------------------------------------
@dataclass(frozen=True)
class FileRef:
    """A file as analysed: its relative path and the size, mtime and sha256 of the bytes that were read."""

    rel: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass
class ImageRow:
    path: str  # in-memory relative path (surrogate-escaped str)
    sha256: str
    size: int
    mtime_ns: int
    status: str
    faces: int = 0
    reason: str = ""
    phash: str = ""
    template: str = ""
    detector: str = ""
    # A failure of the run rather than of the file (the per-file time limit, a worker that died, no memory): how
    # many builds in a row it happened to this file. 0 for every other row, a failure of the file's own included
    # (an undecodable file stays failed). The plan retries a file while this is above 0 and under its limit.
    run_failures: int = 0
    dhash: str = ""  # the first frame's difference hash (templates.picture_hashes): confirms a pHash-only join


# How many builds in a row a file is analysed when each time the run, not the file, makes it fail: a file that
# runs past the time limit or kills its worker on every try stops costing each nightly build a worker and a
# time limit after this many; `retry_failed` tries it again whenever asked.
RUN_FAILURE_RETRIES = 3


def retries_unasked(status: str, run_failures: int) -> bool:
    """Whether the next build analyses a row again without `retry_failed`: the run, not the file, made it fail,
    fewer than RUN_FAILURE_RETRIES builds in a row (the plan retries these; `memeindex check` counts them)."""
    return status == "failed" and 0 < run_failures < RUN_FAILURE_RETRIES


@dataclass
class FaceRow:
    path: str
    sha256: str
    size: int
    mtime_ns: int
    frame: int
    face: int
    box: tuple
    score: float
    blendshapes: np.ndarray
    embedding: np.ndarray
    model_id: str
    template: str = ""
    detector: str = ""


@dataclass
class FileRows:
    """What the analysis of one file gives: its image row and its face rows (picklable; crosses processes)."""

    image: ImageRow
    faces: list[FaceRow] = field(default_factory=list)


def file_rows(ref: FileRef, faces: Sequence | None = None, *, model_id: str, detector: str, phash: str = "",
              dhash: str = "", reason: str = "", run_failures: int = 0) -> FileRows:
    """The rows of one analysed file. `faces` are memeindex.faces.Face objects with `.embedding` set, in
    detection order; `reason` set means the file failed, `run_failures` > 0 that the run made it fail."""
    if reason:
        return FileRows(ImageRow(ref.rel, ref.sha256, ref.size, ref.mtime_ns, "failed", 0, reason, phash, "",
                                 detector, run_failures, dhash))
    rows, per_frame = [], {}
    for face in faces or ():
        number = per_frame.get(face.frame, 0)
        per_frame[face.frame] = number + 1
        rows.append(FaceRow(ref.rel, ref.sha256, ref.size, ref.mtime_ns, int(face.frame), number,
                            tuple(float(v) for v in face.box), float(face.score),
                            np.asarray(face.blendshapes, np.float32), np.asarray(face.embedding, np.float32),
                            model_id, "", detector))
    status = "faces" if rows else "noface"
    return FileRows(ImageRow(ref.rel, ref.sha256, ref.size, ref.mtime_ns, status, len(rows), "", phash, "",
                             detector, 0, dhash), rows)


def images_table(rows: Iterable[ImageRow]) -> pa.Table:
    rows = list(rows)
    cols = {f.name: [getattr(r, f.name) for r in rows] for f in fields(ImageRow)}
    cols["path"], cols["path_bytes"] = _split_paths(cols["path"])
    return pa.table({name: cols[name] for name in IMAGES_SCHEMA.names}, schema=IMAGES_SCHEMA)


def faces_table(rows: Sequence[FaceRow], dim: int) -> pa.Table:
    schema = faces_schema(dim)
    if not rows:
        return schema.empty_table()
    cols = {f.name: [getattr(r, f.name) for r in rows] for f in fields(FaceRow)}
    cols["path"], cols["path_bytes"] = _split_paths(cols["path"])
    for name in ("box", "blendshapes", "embedding"):
        flat = np.asarray(cols[name], dtype=np.float32).reshape(-1)
        cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()),
                                                       schema.field(name).type.list_size)
    return pa.table({name: cols[name] for name in schema.names}, schema=schema)


def image_rows(table: pa.Table) -> list[ImageRow]:
    """Rows of an images table (any schema version) as ImageRow, paths in memory form."""
    table = migrate_images(table)
    keys = row_keys(table)
    names = [f.name for f in fields(ImageRow) if f.name != "path"]
    cols = {n: table.column(n).to_pylist() for n in names}
    return [ImageRow(keys[i], **{n: cols[n][i] for n in names}) for i in range(table.num_rows)]


def embeddings(faces: pa.Table) -> np.ndarray:
    """The embedding column as an (n, dim) float32 array, in row order (= FAISS ids)."""
    col = faces.column("embedding").combine_chunks()
    dim = col.type.list_size
    return np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def _split_paths(keys: list[str]) -> tuple[list[str], list[bytes | None]]:
    pairs = [stored_path(k) for k in keys]
    return [p for p, _ in pairs], [b for _, b in pairs]


# -- migrations ----------------------------------------------------------------------------------------------------
def table_schema_version(table: pa.Table) -> int:
    meta = table.schema.metadata or {}
    return int(meta.get(_META, b"1"))


def _add_default(table: pa.Table, name: str, type_: pa.DataType, value) -> pa.Table:
    if name in table.column_names:
        return table
    # Built in Arrow (no Python list per row): a reader of an older generation pays this at every load.
    return table.append_column(pa.field(name, type_), pa.repeat(pa.scalar(value, type_), table.num_rows))


def _v1_to_v2(table: pa.Table, kind: str) -> pa.Table:
    """v1 -> v2: `path_bytes` (null: v1 could only store UTF-8 names), `template`, `detector` (""), and
    `phash` ("") on images. An empty detector reads as "an older detector", so an incremental build re-analyses
    the v1 files that had no face."""
    table = _add_default(table, "path_bytes", pa.binary(), None)
    table = _add_default(table, "template", pa.string(), "")
    table = _add_default(table, "detector", pa.string(), "")
    if kind == "images":
        table = _add_default(table, "phash", pa.string(), "")
    return table


# The reasons v2 gave the two failures its backends made for the run, not the file (the per-file time limit, a
# worker that died): v2 recorded no kind, so the upgrade recognises them by their wording to let the next build
# retry them. Frozen history, like every migration: new rows carry `run_failures` itself.
_V2_RUN_FAILURE_WORDING = ("s per-file limit (MEMEINDEX_FILE_TIMEOUT)", "the worker analysing it died (")


def _v2_to_v3(table: pa.Table, kind: str) -> pa.Table:
    """v2 -> v3: `run_failures` on images: 1 for a failure v2's backends made for the run, else 0."""
    if kind != "images" or "run_failures" in table.column_names:
        return table
    if "reason" not in table.column_names:  # a reader asked for other columns, not run_failures (MIGRATION_INPUTS)
        return _add_default(table, "run_failures", pa.int32(), 0)
    import functools

    import pyarrow.compute as pc

    reason = table.column("reason")
    by_run = functools.reduce(pc.or_, (pc.match_substring(reason, w).fill_null(False)
                                        for w in _V2_RUN_FAILURE_WORDING))
    return table.append_column(pa.field("run_failures", pa.int32()), by_run.cast(pa.int32()))


def _v3_to_v4(table: pa.Table, kind: str) -> pa.Table:
    """v3 -> v4: `dhash` ("") on images. Grouping then joins these files on their pHash alone, as v3 did."""
    return _add_default(table, "dhash", pa.string(), "") if kind == "images" else table


# version -> step to version + 1; a reader applies each step from the table's version up.
MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}
# A column a migration derives from others: a reader asking for it reads them too (else it would get the default).
MIGRATION_INPUTS = {"run_failures": ("reason",)}


def _upgrade(table: pa.Table, kind: str) -> pa.Table:
    """`table` brought to SCHEMA_VERSION by each MIGRATIONS step from its own version up, and saying so in its
    metadata: a table migrated once is never migrated again, and a generation written from it (the next build's
    kept rows) records the current schema, so its reads skip the migrations. A newer one is refused."""
    version = table_schema_version(table)
    if version > SCHEMA_VERSION:
        raise IndexMismatch(f"a {kind} table has schema {version}; this memeindex reads up to {SCHEMA_VERSION}")
    if version == SCHEMA_VERSION:
        return table
    while version < SCHEMA_VERSION:
        table = MIGRATIONS[version](table, kind)
        version += 1
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _META: str(SCHEMA_VERSION).encode()})


def _migrate(table: pa.Table, kind: str, schema: pa.Schema) -> pa.Table:
    table = _upgrade(table, kind)
    wanted = [n for n in schema.names if n in table.column_names]
    return table.select(wanted).cast(pa.schema([schema.field(n) for n in wanted], metadata=table.schema.metadata))


def _read_columns(path: Path, kind: str, schema: pa.Schema, columns: list[str], dictionary: Sequence[str]):
    """Only `columns` of a table file, migrated; `dictionary` columns stay dictionary-encoded (not cast)."""
    with _arrow_file(path) as f:
        stored = pq.read_schema(f)
        wanted = list(columns) + [i for c in columns if c not in stored.names for i in MIGRATION_INPUTS.get(c, ())]
        have = list(dict.fromkeys(c for c in wanted if c in stored.names))
        table = pq.read_table(f, columns=have, read_dictionary=[c for c in dictionary if c in have])
    table = _upgrade(table.replace_schema_metadata(stored.metadata), kind)
    out = table.select(columns)
    fields = [out.schema.field(c) if c in dictionary else schema.field(c) for c in columns]
    return out.cast(pa.schema(fields, metadata=out.schema.metadata))


def migrate_images(table: pa.Table) -> pa.Table:
    if table_schema_version(table) == SCHEMA_VERSION and table.schema.equals(IMAGES_SCHEMA):
        return table
    return _migrate(table, "images", IMAGES_SCHEMA)


def migrate_faces(table: pa.Table, dim: int | None = None) -> pa.Table:
    if dim is None:
        dim = table.schema.field("embedding").type.list_size
    schema = faces_schema(dim)
    if table_schema_version(table) == SCHEMA_VERSION and table.schema.equals(schema):
        return table
    return _migrate(table, "faces", schema)


def face_rows(faces: pa.Table) -> np.ndarray:
    """The FACE_ROW records of a faces table (or of a batch of its `frame`, `box`, `blendshapes` columns)."""
    rows = np.zeros(faces.num_rows, FACE_ROW)
    if not faces.num_rows:
        return rows
    rows["frame"] = faces.column("frame").to_numpy()
    rows["box"] = faces.column("box").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
    shapes = faces.column("blendshapes").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    rows["blendshapes"] = np.round(np.clip(shapes, 0.0, 1.0) * 255).reshape(-1, N_BLENDSHAPES)
    return rows


# -- plain file I/O: every file of a generation and of a checkpoint, and CURRENT, is written through `replacing` --
def _arrow_file(path: Path, mode: str = "r") -> pa.NativeFile:
    """`path` opened by its bytes: pyarrow takes a path only as UTF-8 text, which an index folder named in other
    bytes (possible on Linux: `--index $'idx-\\xff'`) is not. Every Parquet file is read and written through here."""
    return pa.OSFile(os.fsencode(path), mode)


def write_table(table: pa.Table, path: Path) -> None:
    with replacing(path) as tmp, _arrow_file(tmp, "wb") as f:
        # Row groups of 64k rows: a reader streams a wide column (blendshapes) a group at a time, never whole.
        pq.write_table(table, f, compression="zstd", row_group_size=65536)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    with _arrow_file(path) as f:
        return pq.read_table(f, columns=columns)


def write_face_rows(faces: pa.Table, path: Path, batch: int = 65536) -> None:
    """faces.rows of `faces`, a batch of rows at a time."""
    columns = faces.select(["frame", "box", "blendshapes"])
    with replacing(path) as tmp, open(tmp, "wb") as f:
        for start in range(0, faces.num_rows, batch):
            f.write(face_rows(columns.slice(start, batch)).tobytes())


# -- facts ---------------------------------------------------------------------------------------------------------
def write_facts(folder: Path, **facts) -> dict:
    facts = {"schema_version": SCHEMA_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             **facts}
    with replacing(folder / FACTS_FILE) as tmp:
        tmp.write_text(json.dumps(facts, indent=2) + "\n")
    return facts


def read_facts(folder: Path) -> dict:
    return json.loads((Path(folder) / FACTS_FILE).read_text())


def check_facts(facts: dict, model_id: str | None, dim: int | None, where: Path, model_sha256: str = "") -> None:
    """Refuse an index of a newer schema or another model: its vectors mean nothing to this embedder. Older
    schemas are read through MIGRATIONS. `model_sha256` (the embedder's file; "" for a model that is code) also
    refuses an index built by another file of the same model_id (a retrained model); an index that recorded none
    (built before memeindex recorded it) is read as before."""
    hint = "rebuild it: memeindex build IMAGES_DIR --rebuild"
    version = facts.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise IndexMismatch(f"index {where} has schema {version}, this memeindex reads schema 1 to "
                            f"{SCHEMA_VERSION}: {hint}")
    if model_id is not None and facts.get("model_id") != model_id:
        raise IndexMismatch(f"index {where} was built with model {facts.get('model_id')}, the current model is "
                            f"{model_id}: {hint}")
    built_by = facts.get("model_sha256", "")
    if model_sha256 and built_by and built_by != model_sha256:
        raise IndexMismatch(f"index {where} was built with another {model_id} file (sha256 {built_by[:12]}..., "
                            f"the current one is {model_sha256[:12]}...): {hint}")
    if dim is not None and facts.get("dim") != dim:
        raise IndexMismatch(f"index {where} holds {facts.get('dim')}-d vectors, the model makes {dim}-d: {hint}")
    from . import vectors

    vectors.check_index_type(facts, where)  # index_type / index_params / recall_at_3 are vectors.py's facts


# -- one published generation, read-only --------------------------------------------------------------------------
class Generation:
    """A published generation folder. Readers go through here, never through file names of their own."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._facts: dict | None = None

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def faces_path(self) -> Path:
        return self.folder / FACES_FILE

    @property
    def images_path(self) -> Path:
        return self.folder / IMAGES_FILE

    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_FILE

    @property
    def facts_path(self) -> Path:
        return self.folder / FACTS_FILE

    @property
    def face_rows_path(self) -> Path:
        return self.folder / FACE_ROWS_FILE

    def open_face_rows(self, count: int):
        """faces.rows opened for reading (a binary file object, for os.pread on its fileno(); the caller closes
        it), or None when this generation has none (written before it existed). Damage (IndexDamaged) when its size
        is not `count` records."""
        try:
            file = open(self.face_rows_path, "rb", buffering=0)
        except FileNotFoundError:
            return None
        with self._readable(FACE_ROWS_FILE, ValueError):
            size, want = os.fstat(file.fileno()).st_size, count * FACE_ROW.itemsize
            if size != want:
                file.close()
                raise ValueError(f"{size} bytes, {count} faces need {want}")
        return file

    @property
    def facts(self) -> dict:
        if self._facts is None:
            with self._readable(FACTS_FILE, ValueError):
                self._facts = read_facts(self.folder)
        return self._facts

    @contextmanager
    def _readable(self, name: str, *more: type[BaseException]):
        """A published file that is missing, truncated or not what it should be is damage (IndexDamaged, exit 11,
        one line), never a traceback: query, info, serve and build read through here; `check` lists it."""
        try:
            yield
        except (OSError, pa.ArrowException, *more) as exc:
            raise IndexDamaged(f"index {self.folder.parent}: {name} of {self.name} is unreadable ({_why(exc)}); "
                               "`memeindex check` lists the damage, `memeindex build IMAGES_DIR --rebuild` "
                               "makes a fresh index") from exc

    def check(self, model_id: str | None, dim: int | None, model_sha256: str = "") -> None:
        check_facts(self.facts, model_id, dim, self.folder.parent, model_sha256)

    def faces(self, columns: list[str] | None = None, dictionary: Sequence[str] = ()) -> pa.Table:
        """The faces table migrated to the current schema (only `columns`, when given: only they are read)."""
        with self._readable(FACES_FILE):
            if columns:
                return _read_columns(self.faces_path, "faces", faces_schema(self.facts.get("dim", 0)), columns,
                                     dictionary)
            return migrate_faces(read_table(self.faces_path))

    def images(self, columns: list[str] | None = None, dictionary: Sequence[str] = ()) -> pa.Table:
        """The images table migrated to the current schema (only `columns`, when given: only they are read).
        `dictionary` names string columns to read dictionary-encoded (each distinct value held once)."""
        with self._readable(IMAGES_FILE):
            if columns:
                return _read_columns(self.images_path, "images", IMAGES_SCHEMA, columns, dictionary)
            return migrate_images(read_table(self.images_path))

    def face_batches(self, columns: list[str]) -> Iterable[pa.Table]:
        """`columns` of the faces table in row order, one row group at a time: a wide column of a million faces
        (52 blendshapes) never sits in memory whole (iter_batches pre-buffers every row group first)."""
        with self._readable(FACES_FILE):
            with _arrow_file(self.faces_path) as f:
                file = pq.ParquetFile(f)
                for group in range(file.num_row_groups):
                    yield file.read_row_group(group, columns=columns)

    def read_index(self):
        from . import vectors

        facts = self.facts
        with self._readable(INDEX_FILE, RuntimeError):  # FAISS raises RuntimeError for a file it cannot read
            return vectors.read_index(self.index_path, facts)


# -- the index folder ----------------------------------------------------------------------------------------------
# What a folder of its own may already hold: a freshly formatted disk's lost+found, a file manager's own files.
_NOT_FOREIGN = frozenset({"lost+found", ".DS_Store", "Thumbs.db", "desktop.ini"})


class IndexDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():  # else every command ends in NotADirectoryError
            raise IndexMissing(f"no index at {self.path}: it is a file; an index is a folder (--index DIR)")

    def current(self) -> Path:
        """The folder of the published generation; IndexMissing when nothing was ever built here, IndexDamaged when
        the pointer to it cannot be read."""
        try:
            name = (self.path / CURRENT).read_text().strip()
        except FileNotFoundError:
            raise IndexMissing(f"no index at {self.path}: build one with `memeindex build IMAGES_DIR`") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IndexDamaged(f"index {self.path}: its {CURRENT} pointer is unreadable ({_why(exc)}); "
                               "`memeindex build IMAGES_DIR --rebuild` makes a fresh index") from exc
        return self.path / name

    def current_or_none(self) -> Path | None:
        try:
            return self.current()
        except IndexMissing:
            return None

    def generation(self) -> Generation:
        return Generation(self.current())

    def pointer_stamp(self) -> tuple[int, int] | None:
        """Changes whenever a new generation is published: cheap enough to check on every request."""
        try:
            st = os.stat(self.path / CURRENT)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    @property
    def partial(self) -> Path:
        return self.path / PARTIAL

    def checkpointed(self) -> bool:
        """Checkpoints of a build that runs now, or of one stopped (killed, interrupted) for the next to resume."""
        return self.partial.exists() and any(self.partial.glob("*.parquet"))

    def build_running(self) -> bool:
        """Whether a build holds this index's lock now; the kernel drops a killed build's lock with it. The probe
        holds a shared lock for an instant, which `lock` waits out."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EAGAIN, errno.EACCES)
        finally:
            os.close(fd)  # drops the probe's lock
        return False

    def new_generation(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        # Nanoseconds + pid: two builds in one second (or one process) never share a name.
        tmp = self.path / f"gen-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}-{os.getpid()}.tmp"
        tmp.mkdir()
        return tmp

    def publish(self, tmp: Path) -> Path:
        final = tmp.with_suffix("")
        os.replace(tmp, final)
        try:
            previous = self.current_or_none()
        except IndexDamaged:  # an unreadable pointer (what --rebuild replaces) names no generation to keep
            previous = None
        try:
            with replacing(self.path / CURRENT) as pointer:
                pointer.write_text(final.name + "\n")
        except OSError:  # a full disk: CURRENT still names the last good one; this one goes back to be swept
            os.replace(final, tmp)
            raise
        _fsync_dir(self.path)
        for old in self.path.glob("gen-*"):
            if old not in (final, previous) and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return final

    def clean_stale(self) -> None:
        """Temp leftovers of a killed build (never the checkpoints: those are what a resume reuses): generation
        folders never published and atomicfile temp files (`.NAME.tmpPID`)."""
        for stale in list(self.path.glob("gen-*.tmp")) + list(self.path.glob(temp_glob())) \
                + list(self.partial.glob(temp_glob())):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)

    def _refuse_foreign(self) -> None:
        """A folder that holds files but no index is not a build's to write into: a publish sweeps the `gen-*`
        folders and stale-looking temp files it finds there as its own (`--index ~/Documents`, or `--index ""`,
        which is the current folder)."""
        if not self.path.is_dir() or any((self.path / name).exists() for name in (CURRENT, LOCK, PARTIAL)):
            return
        with os.scandir(self.path) as entries:
            if any(e.name not in _NOT_FOREIGN for e in entries):
                raise IndexUnwritable(f"{shown_path(str(self.path))} holds other files and no index: an index needs a "
                                      "folder of its own (--index a new or empty folder)")

    @contextmanager
    def lock(self):
        """One build at a time per index. The kernel drops the lock if the holder dies, even by kill -9."""
        self._refuse_foreign()
        with _writable(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for attempt in range(3):  # a build holds it for minutes; build_running's probe for an instant
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if attempt == 2:
                        raise BuildLocked(f"another build is running on {self.path}") from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)


@contextmanager
def _writable(where: Path, *more: type[BaseException]):
    """A write the index folder refuses (disk full, read-only file system, no permission) is IndexUnwritable: one
    line and its exit code, never a traceback. What was published before is untouched: only temp files and
    `.tmp` folders were being written, which the next build sweeps (IndexDir.clean_stale)."""
    try:
        yield
    except (OSError, *more) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise IndexUnwritable(f"cannot write the index at {where}: {why}; the last good index is left as it "
                              "was") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- checkpoints: rows of a build in progress, so a killed build resumes ------------------------------------------
class Checkpoints:
    """`partial/images-STAMP.parquet` + `partial/faces-STAMP.parquet` pairs, both tagged with the model id (and the
    model file's sha256, when it has one: a retrained file's vectors are not resumed) in their schema metadata (read
    one way). The faces file is written last: a pair counts only when it exists."""

    def __init__(self, index_dir: IndexDir):
        self.dir = index_dir.partial

    def write(self, n: int, rows: Sequence[FileRows], model_id: str, dim: int, model_sha256: str = "") -> None:
        stamp = f"{int(time.time() * 1000)}-{n:05d}"
        tag = {_MODEL_META: _model_tag(model_id, model_sha256).encode()}
        faces = faces_table([f for r in rows for f in r.faces], dim)
        images = images_table([r.image for r in rows])
        with _writable(self.dir.parent):
            self.dir.mkdir(parents=True, exist_ok=True)
            write_table(images.replace_schema_metadata({**images.schema.metadata, **tag}),
                        self.dir / f"images-{stamp}.parquet")
            write_table(faces.replace_schema_metadata({**faces.schema.metadata, **tag}),
                        self.dir / f"faces-{stamp}.parquet")

    def read(self, model_id: str, dim: int, model_sha256: str = "") -> tuple[pa.Table, pa.Table]:
        """(images, faces) of every complete checkpoint made with `model_id` (and its file `model_sha256`), migrated
        to the current schema."""
        want = _model_tag(model_id, model_sha256)
        images, faces = [IMAGES_SCHEMA.empty_table()], [faces_schema(dim).empty_table()]
        for chunk in sorted(self.dir.glob("faces-*.parquet")):
            partner = chunk.with_name(chunk.name.replace("faces-", "images-", 1))
            try:
                img, fac = read_table(partner), read_table(chunk)
            except (OSError, pa.ArrowException) as exc:
                log.warning("ignoring checkpoint %s: %s", chunk.name, exc)
                continue
            if _tag(img) != want or _tag(fac) != want:
                continue
            images.append(migrate_images(img))
            faces.append(migrate_faces(fac, dim))
        return pa.concat_tables(images), pa.concat_tables(faces)

    def clear(self) -> None:
        for chunk in self.dir.glob("*.parquet"):  # folded into the published generation
            chunk.unlink(missing_ok=True)


def _model_tag(model_id: str, model_sha256: str) -> str:
    return f"{model_id}@{model_sha256}" if model_sha256 else model_id


def _tag(table: pa.Table) -> str:
    return (table.schema.metadata or {}).get(_MODEL_META, b"").decode()


# -- the one writer -------------------------------------------------------------------------------------------------
class Disagreement(Exception):
    """images.parquet and faces.parquet would disagree; a bug, never written."""


def key_column(table: pa.Table) -> pa.Array | pa.ChunkedArray:
    """One string per row telling the rows' in-memory paths apart: the stored path and, for a name that is not
    UTF-8, its exact bytes in hex after a NUL (which no file name holds). Python values only for those rare rows.
    How faces rows find their file's images row (the checks, template grouping): the stored path alone is the same
    for a name that is not UTF-8 and the UTF-8 name that spells its escapes."""
    import pyarrow.compute as pc

    raw = table.column("path_bytes") if "path_bytes" in table.column_names else None
    if raw is None or raw.null_count == table.num_rows:
        return table.column("path")  # as it is: no copy of a million faces' paths
    path = table.column("path").combine_chunks()
    odd = raw.is_valid().to_numpy(zero_copy_only=False)
    rows = pa.array(np.flatnonzero(odd))
    keys = [p + "\x00" + b.hex() for p, b in zip(path.take(rows).to_pylist(), raw.take(rows).to_pylist())]
    return pc.replace_with_mask(path, pa.array(odd), pa.array(keys, pa.string()))


def positions(values, value_set) -> np.ndarray:
    """Each value's position in `value_set` (-1: not there), as numbers (Arrow's hash table, no Python object per
    value): how the generation's checks and template grouping join tables of a million rows."""
    import pyarrow.compute as pc

    return np.asarray(pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy(zero_copy_only=False),
                      np.int64)


_HEX_DIGIT = np.full(256, 255, np.uint8)  # byte -> its value as a hex digit; 255: not one
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_DIGIT[_c] = _HEX_DIGIT[ord(chr(_c).upper())] = _i


def hex_words(column, whole: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(uint64, readable) of the first 16 hex digits of each value of a string column, decoded from the Arrow
    buffers a chunk at a time (no Python string per row): a sha256's meme id, or with `whole` a 64-bit picture hash,
    which must be those 16 digits exactly. Unreadable (0): null, shorter than 16 bytes (or longer, with `whole`), or
    a byte among the 16 that is not a hex digit (a non-ASCII character is several bytes: never a digit)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_hex_chunk(chunk, whole) for chunk in chunks]
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    return np.concatenate([w for w, _ in parts]), np.concatenate([r for _, r in parts])


def _hex_chunk(values: pa.Array, whole: bool) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.compute as pc

    n = len(values)
    if not n:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    raw = values.cast(pa.string()).cast(pa.binary())
    length = pc.binary_length(raw)
    readable = np.asarray((pc.equal(length, 16) if whole else pc.greater_equal(length, 16)).fill_null(False)
                          .to_numpy(zero_copy_only=False), bool)
    head = raw if whole else pc.binary_slice(raw, 0, 16)
    sixteen = pc.if_else(pa.array(readable), head, pa.scalar(b"0" * 16, pa.binary())).cast(pa.binary(16))
    digits = np.frombuffer(sixteen.buffers()[1], np.uint8)[sixteen.offset * 16:(sixteen.offset + n) * 16]
    nibbles = _HEX_DIGIT[digits].reshape(n, 16)
    readable &= ~(nibbles == 255).any(axis=1)
    words = np.zeros(n, np.uint64)
    for k in range(16):  # a digit at a time: no (n, 16) array of 64-bit words
        words = (words << np.uint64(4)) | nibbles[:, k]
    words[~readable] = 0
    return words, readable


def agreement_errors(images: pa.Table, faces: pa.Table) -> list[str]:
    """Every way the images table and the faces table disagree (empty when they agree). Paths and contents are
    numbered once (Arrow hash tables) and compared as numbers: no Python object per row at a million rows; only the
    rows at fault become Python values, for their messages."""
    import pyarrow.compute as pc

    errors = []
    image_keys = key_column(images)
    keys = pc.unique(image_keys)
    image_key, face_key = positions(image_keys, keys), positions(key_column(faces), keys)
    shas = pc.unique(pa.chunked_array(images.column("sha256").chunks + faces.column("sha256").chunks, pa.string()))
    image_sha, face_sha = positions(images.column("sha256"), shas), positions(faces.column("sha256"), shas)
    known = face_key >= 0
    n_of_key = np.bincount(face_key[known], minlength=len(keys))
    low, high = np.full(len(keys), np.iinfo(np.int64).max), np.full(len(keys), -1)
    np.minimum.at(low, face_key[known], face_sha[known])
    np.maximum.at(high, face_key[known], face_sha[known])

    two = np.flatnonzero((n_of_key > 0) & (low != high))
    if len(two):
        first_face = dict(zip(*np.unique(face_key[known], return_index=True)))
        rows = [int(np.flatnonzero(known)[first_face[k]]) for k in two]
        errors += [f"faces of {key!r} come from two contents" for key in row_keys(faces.take(pa.array(rows)))]

    n = n_of_key[image_key]
    said = np.asarray(images.column("faces").fill_null(-1).to_numpy(zero_copy_only=False), np.int64)
    status = images.column("status")
    bad_status = ~np.asarray(pc.is_in(status, value_set=pa.array(STATUSES)).fill_null(False)
                             .to_numpy(zero_copy_only=False), bool)
    says_faces = np.asarray(pc.equal(status, "faces").fill_null(False).to_numpy(zero_copy_only=False), bool)
    miscounted = (says_faces != (n > 0)) | (said != n)
    other = (n > 0) & ((low[image_key] != image_sha) | (high[image_key] != image_sha))
    repeated = np.ones(images.num_rows, bool)
    repeated[np.unique(image_key, return_index=True)[1]] = False  # every row of a path but its first
    faulty = np.flatnonzero(repeated | bad_status | miscounted | other)
    if len(faulty):
        rows = pa.array(faulty)
        for i, key, st, count in zip(faulty.tolist(), row_keys(images.take(rows)), status.take(rows).to_pylist(),
                                     images.column("faces").take(rows).to_pylist()):
            if repeated[i]:
                errors.append(f"{key!r} has two image rows")
            if bad_status[i]:
                errors.append(f"{key!r} has status {st!r}")
            if miscounted[i]:
                errors.append(f"{key!r}: images says {st} with {count} face(s), faces holds {n[i]}")
            if other[i]:
                errors.append(f"{key!r}: its faces come from other content than its image row")

    orphans = np.flatnonzero(~known)  # face rows of a path without an image row: few, so plain Python
    if len(orphans):
        rows = pa.array(orphans)
        contents: dict[str, set] = {}
        for key, sha in zip(row_keys(faces.take(rows)), faces.column("sha256").take(rows).to_pylist()):
            contents.setdefault(key, set()).add(sha)
        errors += [f"faces of {key!r} come from two contents" for key, s in contents.items() if len(s) > 1]
        errors += [f"{key!r} has face rows but no image row" for key in contents]
    return errors


def write_generation(index_dir: IndexDir, faces: pa.Table, images: pa.Table, index, **facts) -> Path:
    """Write and publish one generation: the tables (sorted), the FAISS `index` over `faces` in row order, the
    facts (`count`/`images` filled in here). Refuses tables that disagree. Returns the published folder."""
    faces = migrate_faces(faces)
    images = migrate_images(images)
    problems = agreement_errors(images, faces)
    if problems:
        raise Disagreement("; ".join(problems[:5]))
    if index.ntotal != faces.num_rows:
        raise Disagreement(f"the vector index holds {index.ntotal} vectors for {faces.num_rows} face rows")
    from . import vectors

    with _writable(index_dir.path, RuntimeError):  # FAISS's write_index raises RuntimeError when a write fails
        tmp = index_dir.new_generation()
        write_table(faces, tmp / FACES_FILE)
        write_table(images, tmp / IMAGES_FILE)
        write_face_rows(faces, tmp / FACE_ROWS_FILE)
        with replacing(tmp / INDEX_FILE) as index_tmp:
            vectors.write_index(index, index_tmp)
        write_facts(tmp, count=faces.num_rows, images=images.num_rows, **facts)
        return index_dir.publish(tmp)


def sort_faces(faces: pa.Table) -> pa.Table:
    return faces.sort_by([("path", "ascending"), ("frame", "ascending"), ("face", "ascending")])


def sort_images(images: pa.Table) -> pa.Table:
    return images.sort_by([("path", "ascending")])


def take_paths(table: pa.Table, keys: Iterable[str]) -> pa.Table:
    """Rows of `table` whose in-memory path is one of `keys`."""
    wanted = set(keys)
    mask = [k in wanted for k in row_keys(table)]
    return table.filter(pa.array(mask, pa.bool_())) if table.num_rows else table


def retag(faces: pa.Table, key: str, sha256: str, size: int, mtime_ns: int) -> pa.Table:
    """Face rows of some content, moved to another path (a rename or a copy reuses the analysis)."""
    path, raw = stored_path(key)
    n = faces.num_rows
    for name, value, type_ in (("path", path, pa.string()), ("path_bytes", raw, pa.binary()),
                               ("sha256", sha256, pa.string()), ("size", size, pa.int64()),
                               ("mtime_ns", mtime_ns, pa.int64())):
        faces = faces.set_column(faces.schema.get_field_index(name), name, pa.array([value] * n, type_))
    return faces



# -- check: the fsck ------------------------------------------------------------------------------------------------
@dataclass
class CheckReport:
    index: str
    generation: str = ""
    images: int = 0
    faces: int = 0
    vectors: int = 0
    model_id: str = ""
    detector: str = ""
    schema_version: int = 0
    to_retry: int = 0  # failed files the next build analyses again unasked (the run made them fail; see plan.py)
    problems: list[str] = field(default_factory=list)  # damage: the index cannot be trusted
    notes: list[str] = field(default_factory=list)  # worth knowing, not damage

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "ok": self.ok}


def check(index_dir: Path, model_id: str | None = None, dim: int | None = None,
          detector: str | None = None, model_sha256: str = "") -> CheckReport:
    """Verify the published generation of `index_dir`: every file present and readable, row counts as the facts
    say, images and faces agreeing, one vector per face row, facts matching the model (`model_id`/`dim` and the
    model file's `model_sha256`, when given). Returns the report; raises IndexMissing when nothing was ever published there."""
    idx = IndexDir(index_dir)
    folder = idx.current()
    report = CheckReport(index=shown_path(str(idx.path)), generation=folder.name)
    problems = report.problems
    if not folder.is_dir():
        problems.append(f"CURRENT names {folder.name}, which does not exist")
        return report
    g = Generation(folder)
    facts: dict = {}
    try:
        facts = g.facts
        report.model_id, report.detector = facts.get("model_id", ""), facts.get("detector", "")
        report.schema_version = facts.get("schema_version", 0)
    except IndexDamaged as exc:
        problems.append(f"{FACTS_FILE}: unreadable ({_why(exc.__cause__)})")
    images = faces = None
    for name, read in ((IMAGES_FILE, g.images), (FACES_FILE, g.faces)):
        try:
            table = read()
        except (IndexDamaged, IndexMismatch, KeyError, ValueError) as exc:
            problems.append(f"{name}: unreadable ({_why(exc.__cause__ if isinstance(exc, IndexDamaged) else exc)})")
            continue
        if name == IMAGES_FILE:
            images, report.images = table, table.num_rows
            report.to_retry = sum(map(retries_unasked, table.column("status").to_pylist(),
                                      table.column("run_failures").to_pylist()))
        else:
            faces, report.faces = table, table.num_rows
    index = None
    try:
        from . import vectors

        index = vectors.read_index(g.index_path, facts)  # with the facts when they are readable
        report.vectors = int(index.ntotal)
    except Exception as exc:  # noqa: BLE001 (FAISS raises RuntimeError for anything unreadable)
        problems.append(f"{INDEX_FILE}: unreadable ({_why(exc)})")
    if facts:
        try:
            check_facts(facts, model_id, dim, idx.path, model_sha256)
        except IndexMismatch as exc:
            problems.append(str(exc))
        if images is not None and facts.get("images") != images.num_rows:
            problems.append(f"{IMAGES_FILE} holds {images.num_rows} rows, the facts say {facts.get('images')}")
        if faces is not None and facts.get("count") != faces.num_rows:
            problems.append(f"{FACES_FILE} holds {faces.num_rows} rows, the facts say {facts.get('count')}")
        if index is not None and facts.get("dim") not in (None, index.d):
            problems.append(f"{INDEX_FILE} holds {index.d}-d vectors, the facts say {facts.get('dim')}")
    if faces is not None and g.face_rows_path.exists():  # optional: generations written before it have none
        size, want = g.face_rows_path.stat().st_size, faces.num_rows * FACE_ROW.itemsize
        if size != want:
            problems.append(f"{FACE_ROWS_FILE} holds {size} bytes, {faces.num_rows} face rows need {want}")
        elif faces.num_rows:
            problems += _face_rows_match(g, faces)
    if faces is not None and index is not None and index.ntotal != faces.num_rows:
        problems.append(f"{INDEX_FILE} holds {index.ntotal} vectors for {faces.num_rows} face rows")
    if images is not None and faces is not None:
        problems += agreement_errors(images, faces)[:20]
        if index is not None and index.ntotal == faces.num_rows and faces.num_rows:
            problems += _vectors_match(index, faces)
    if facts and detector is not None and report.detector != detector and images is not None:
        stale = sum(1 for s, d in zip(images.column("status").to_pylist(), images.column("detector").to_pylist())
                    if s == "noface" and d != detector)
        report.notes.append(f"built with detector {report.detector or '(unrecorded)'}, the current one is "
                            f"{detector}: the next build re-analyses {stale} file(s) without a face")
    if images is not None and facts.get("root"):
        report.notes += _root_notes(Path(facts["root"]), images)
    return report


def _root_notes(root: Path, images: pa.Table) -> list[str]:
    """The indexed image files as they are now (not damage: the next build brings the index up to date)."""
    if not root.is_dir():
        return [f"the image folder {shown_path(str(root))} is not there (a build refuses to run until it is back)"]
    gone = changed = 0
    for key, size, mtime in zip(row_keys(images), images.column("size").to_pylist(),
                                images.column("mtime_ns").to_pylist()):
        try:
            st = os.stat(root / key)
        except OSError:
            gone += 1
            continue
        changed += (st.st_size, st.st_mtime_ns) != (size, mtime)
    if gone or changed:
        return [f"{gone} indexed file(s) gone and {changed} changed under {shown_path(str(root))} since the build "
                "(the next build updates the index)"]
    return []


def _vectors_match(index, faces: pa.Table) -> list[str]:
    """A few vectors read back from the index equal their rows' embeddings (when the index can give them back)."""
    n = faces.num_rows
    rows = sorted({0, n // 2, n - 1})
    try:
        stored = np.stack([index.reconstruct(int(i)) for i in rows])
    except RuntimeError:  # an index type that keeps no vectors: nothing to compare
        return []
    wanted = embeddings(faces.take(rows))
    if not np.allclose(stored, wanted, atol=1e-2):
        return [f"{INDEX_FILE} vectors do not match the embeddings of {FACES_FILE} (rows {rows})"]
    return []


def _face_rows_match(g: Generation, faces: pa.Table) -> list[str]:
    """A few records of faces.rows equal what their face rows say (the same sample as the vectors)."""
    n = faces.num_rows
    rows = sorted({0, n // 2, n - 1})
    with open(g.face_rows_path, "rb") as f:
        stored = np.concatenate([np.frombuffer(os.pread(f.fileno(), FACE_ROW.itemsize, i * FACE_ROW.itemsize),
                                               FACE_ROW) for i in rows])
    if stored.tobytes() != face_rows(faces.take(rows)).tobytes():
        return [f"{FACE_ROWS_FILE} records do not match the rows of {FACES_FILE} (rows {rows})"]
    return []


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
