"""The embedded store: one SQLite file in WAL mode, MESH_HOME/state/mesh.db.

Why SQLite: it is in Python's standard library, its transactions are atomic
and durable across a crash or a power cut (a commit is in the write-ahead log
and fsynced, ``synchronous=FULL``, before ``commit`` returns; a torn write is
rolled back on the next open), it checks its own file (``quick_check``), and it
can be backed up while in use (``sqlite3 mesh.db .backup``, or ``mesh store
backup``). WAL mode lets a backup or a `mesh check` read while the controller
writes. A hand-made JSON file with rename would give atomicity but no
history of revisions, no partial update and no integrity check.

It copies etcd's model on a small scale (``Store`` in ``_store.py``): one
revision counter, compare-and-swap commits, leases, watches. There is one
controller per MESH_HOME (an flock), so watches only ever see this process's
own changes, delivered in memory.

Leases live in memory: keeping one alive writes nothing (heartbeats cost no
disk I/O). Their TTL is on disk, and after a restart every lease starts again
with its full TTL: the proxies that hold them re-register within one heartbeat,
and the dead ones go one TTL later.

Calls are synchronous in the trio thread: a commit is one small transaction
(well under a millisecond, plus one fsync), and the controller writes only on
changes, never on heartbeats.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from mesh.controller._store import (
    Compare,
    KeyValue,
    Put,
    StoreCompacted,
    StoreEvent,
    StoreHealth,
    StoreUnavailable,
)
from mesh.errors import StoreError

log = logging.getLogger("mesh.controller.store")

SCHEMA_VERSION = 1
RECENT_EVENTS = 10_000  # what a watch can catch up on
LOW_SPACE = 1024 * 1024  # below this, a write error is a full disk (SQLite may call it an I/O error)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    mod_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL);
"""
_RESTORE_HINT = (
    "restore MESH_HOME/state/mesh.db from a backup (docs/operations.md, Backup), or move the "
    "state directory away to start with an empty store (proxies keep the newer config they hold "
    "until they restart)"
)


class EmbeddedStore:
    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._db: sqlite3.Connection | None = None
        self._revision = 0
        self._first_revision = 0  # the revision at open: watches can start from here on
        self._leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, expires at)
        self._events: deque[StoreEvent] = deque(maxlen=RECENT_EVENTS)
        self._changed = trio.Event()
        self._write_error: str | None = None

    @property
    def location(self) -> str:
        return str(self.path)

    # -- opening: refuse a broken or unwritable file rather than serve nothing -------

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path.parent, 0o700)
        except OSError as exc:
            raise StoreError(
                f"cannot create {self.path.parent}: {exc.strerror or exc}",
                hint="the controller needs a writable MESH_HOME (check the disk and permissions)",
            ) from None
        existed = self.path.exists()
        if not existed:  # owner-only; SQLite gives its -wal and -shm files the same mode
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise StoreError(f"cannot create the embedded store {self.path}: {exc.strerror or exc}") from None
            existed = False
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as exc:
            raise self._open_error(exc) from None
        self._db = db
        try:
            if existed or self.path.stat().st_size:
                checked = db.execute("PRAGMA quick_check").fetchone()[0]
                if checked != "ok":
                    raise StoreError(
                        f"the embedded store {self.path} is corrupt ({checked}); "
                        "the controller refuses to start rather than serve an empty config",
                        hint=_RESTORE_HINT,
                    )
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"the embedded store {self.path} cannot use write-ahead logging ({mode})")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            schema = self._meta("schema")
            if schema is not None and int(schema) > SCHEMA_VERSION:
                raise StoreError(
                    f"the embedded store {self.path} was written by a newer mesh (schema {schema}, "
                    f"this one reads {SCHEMA_VERSION})",
                    hint="run the newer mesh, or restore a backup taken with this version",
                )
            self._revision = int(self._meta("revision") or 0)
            # One write now: a full disk or a read-only file shows here, not on the first apply.
            self._transaction(lambda: self._set_meta("opened_at", f"{time.time():.3f}"), self._set_meta_schema)
        except StoreError:
            self._close_quietly()
            raise
        except sqlite3.Error as exc:
            self._close_quietly()
            raise self._open_error(exc) from None
        self._first_revision = self._revision
        now = self._clock()
        for lease, ttl in db.execute("SELECT id, ttl FROM leases"):
            self._leases[int(lease)] = (float(ttl), now + float(ttl))
        os.chmod(self.path, 0o600)

    def _set_meta_schema(self) -> None:
        self._set_meta("schema", str(SCHEMA_VERSION))

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "disk is full" in text or "disk I/O error" in text:
            free = _free_bytes(self.path.parent)
            if free is not None and free < LOW_SPACE:
                text = f"the file system is full ({free // 1024} KiB free; SQLite says: {text})"
            return StoreError(
                f"the embedded store {self.path} cannot be written: {text} "
                "(the controller refuses to start rather than lose changes)",
                hint=f"free space on the file system of {self.path.parent}, then start it again",
            )
        if "not a database" in text or "malformed" in text:
            return StoreError(
                f"the embedded store {self.path} is corrupt ({text}); "
                "the controller refuses to start rather than serve an empty config",
                hint=_RESTORE_HINT,
            )
        if "readonly" in text or "unable to open" in text:
            return StoreError(
                f"cannot open the embedded store {self.path}: {text}",
                hint="check the permissions of MESH_HOME/state and the file (owner-only, 0700/0600)",
            )
        return StoreError(f"the embedded store {self.path} failed: {text}", hint=_RESTORE_HINT)

    def _close_quietly(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    # -- small helpers ---------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f"the embedded store {self.path} is closed")
        return self._db

    def _meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def _transaction(self, *steps: Callable[[], object]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for step in steps:
                step()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        self._write_error = str(exc)
        log.error("the embedded store %s cannot take writes: %s", self.path, exc)
        return StoreUnavailable(
            f"the embedded store {self.path} cannot take writes: {exc}",
            hint=f"free space on the file system of {self.path.parent} (the config in force stays)",
        )

    def _publish(self, events: list[StoreEvent]) -> None:
        if events:
            self._events.extend(events)
            self._changed.set()
            self._changed = trio.Event()

    # -- Store -------------------------------------------------------------------------

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        rows = self.db.execute(
            "SELECT key, value, mod_revision, lease FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\U0010ffff"),
        ).fetchall()
        return [KeyValue(k, bytes(v), int(r), int(lease)) for k, v, r, lease in rows], self._revision

    async def get(self, key: str) -> KeyValue | None:
        row = self.db.execute("SELECT value, mod_revision, lease FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else KeyValue(key, bytes(row[0]), int(row[1]), int(row[2]))

    async def commit(
        self, puts: Sequence[Put] = (), deletes: Sequence[str] = (), compares: Sequence[Compare] = ()
    ) -> int | None:
        return self._commit(puts, deletes, compares)

    def _commit(self, puts: Sequence[Put], deletes: Sequence[str], compares: Sequence[Compare]) -> int | None:
        db = self.db
        events: list[StoreEvent] = []
        revision = self._revision + 1
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for compare in compares:
                    row = db.execute("SELECT mod_revision FROM kv WHERE key = ?", (compare.key,)).fetchone()
                    if (int(row[0]) if row else 0) != compare.mod_revision:
                        db.execute("ROLLBACK")
                        return None
                for put in puts:
                    if put.lease:
                        ttl = self._leases.get(put.lease, (0.0, 0.0))[0]
                        if not ttl:
                            raise StoreUnavailable(f"lease {put.lease} has run out")
                        db.execute("INSERT OR REPLACE INTO leases (id, ttl) VALUES (?, ?)", (put.lease, ttl))
                    db.execute(
                        "INSERT OR REPLACE INTO kv (key, value, mod_revision, lease) VALUES (?, ?, ?, ?)",
                        (put.key, put.value, revision, put.lease),
                    )
                    events.append(StoreEvent(put.key, put.value, revision, put.lease))
                for key in deletes:
                    if db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                        events.append(StoreEvent(key, None, revision))
                if not events:
                    db.execute("ROLLBACK")
                    return self._revision
                self._set_meta("revision", str(revision))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        self._write_error = None
        self._revision = revision
        self._publish(events)
        return revision

    async def grant(self, ttl: float) -> int:
        lease = secrets.randbits(62) or 1
        self._leases[lease] = (ttl, self._clock() + ttl)
        return lease

    async def keepalive(self, lease: int) -> bool:
        held = self._leases.get(lease)
        if held is None:
            return False
        ttl, _ = held
        self._leases[lease] = (ttl, self._clock() + ttl)
        return True

    async def revoke(self, lease: int) -> None:
        self._drop_leases([lease])

    def expire_leases(self) -> int:
        """Delete the keys of leases that ran out; the controller calls this every second."""
        now = self._clock()
        dead = [lease for lease, (_, expires) in self._leases.items() if expires <= now]
        if dead:
            self._drop_leases(dead)
        return len(dead)

    def _drop_leases(self, leases: list[int]) -> None:
        for lease in leases:
            self._leases.pop(lease, None)
        marks = ",".join("?" * len(leases))
        keys = [k for (k,) in self.db.execute(f"SELECT key FROM kv WHERE lease IN ({marks})", leases)]  # noqa: S608
        try:
            self._transaction(lambda: self.db.execute(f"DELETE FROM leases WHERE id IN ({marks})", leases))  # noqa: S608
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        if keys:
            self._commit((), keys, ())

    def _missed(self, after: int) -> bool:
        """True when changes after ``after`` are no longer all in memory."""
        if after >= self._revision:
            return False
        return not self._events or self._events[0].revision > after + 1

    @asynccontextmanager
    async def watch(self, prefix: str, after: int) -> AsyncIterator[AsyncIterator[list[StoreEvent]]]:
        if self._missed(after):
            raise StoreCompacted(f"revision {after} is no longer kept in memory by {self.path}")

        async def events() -> AsyncIterator[list[StoreEvent]]:
            seen = after
            while True:
                if self._missed(seen):
                    raise StoreCompacted(f"the watch of {self.path} fell behind")
                batch = [e for e in self._events if e.revision > seen and e.key.startswith(prefix)]
                seen = self._revision
                if batch:
                    yield batch
                    continue
                await self._changed.wait()

        yield events()

    async def health(self) -> StoreHealth:
        if self._write_error is not None:
            try:  # has it recovered (space freed)?
                self._transaction(lambda: self._set_meta("checked_at", f"{time.time():.3f}"))
                self._write_error = None
            except sqlite3.Error as exc:
                self._write_error = str(exc)
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return StoreHealth(
            backend="embedded",
            location=str(self.path),
            writable=self._write_error is None,
            reason=None if self._write_error is None else f"writes fail: {self._write_error}",
            revision=self._revision,
            details={"size_bytes": size, "schema": SCHEMA_VERSION, "leases": len(self._leases)},
        )

    async def aclose(self) -> None:
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._close_quietly()


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def backup(source: Path, target: Path) -> int:
    """A consistent copy of a store, also while a controller writes to it (SQLite's backup API)."""
    if not source.exists():
        raise StoreError(f"there is no embedded store at {source}", hint="has a controller ever run on this MESH_HOME?")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=5.0)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source} to {target}: {exc}") from None
    os.chmod(target, 0o600)
    return target.stat().st_size


def restore(backup_file: Path, path: Path, root_fingerprint: str) -> Path | None:
    """Put a backup in place of the store at ``path`` (the controller is stopped: the caller holds
    the MESH_HOME lock). The backup is checked first; the store it replaces is kept beside it.
    Returns where the replaced store went (None when there was none)."""
    import json
    import shutil

    if not backup_file.is_file():
        raise StoreError(f"there is no backup at {backup_file}")
    try:
        db = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            checked = db.execute("PRAGMA quick_check").fetchone()[0]
            row = db.execute("SELECT value FROM kv WHERE key = 'meta/ca'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{backup_file} is not a backup of an embedded store: {exc}") from None
    if checked != "ok":
        raise StoreError(f"the backup {backup_file} is corrupt ({checked})", hint="take another backup")
    claim = json.loads(row[0]) if row else {}
    if claim and claim.get("root_fingerprint") != root_fingerprint:
        raise StoreError(
            f"{backup_file} is the store of another mesh (CA {claim.get('root_fingerprint')}, "
            f"this MESH_HOME's is {root_fingerprint})",
            hint="restore it into the MESH_HOME that holds that mesh's CA",
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replaced = None
    if path.exists():
        replaced = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
        shutil.move(path, replaced)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # they belong to the replaced file
    shutil.copyfile(backup_file, path)
    os.chmod(path, 0o600)
    return replaced
