"""The song library: every take, upload, stem and lyric draft, kept on disk and in SQLite.

An item is a folder `library/<id>/` holding `meta.json` (the sidecar) and, for audio, a
48 kHz stereo FLAC master. The folder is written under a temporary name and renamed into
place before the index row is added, so a crash never leaves a half-written entry, and a
folder whose row is missing (a crash between rename and insert) is re-indexed at start.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import audio as audio_io
from core.db import Database

KINDS = ("take", "upload", "stem", "lyrics")
META_FILE = "meta.json"
AUDIO_FILE = "audio.flac"
PREVIEW_FILE = "preview.mp3"


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    created: float
    title: str = ""
    caption: str = ""
    duration: float | None = None
    parent_id: str | None = None
    operation: str = ""
    job_id: str | None = None
    take_index: int | None = None
    audio_file: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def display_title(self) -> str:
        if self.title:
            return self.title
        if self.caption:
            return self.caption[:48] + ("…" if len(self.caption) > 48 else "")
        return f"Untitled {self.kind}"


class ItemNotFound(LookupError):
    pass


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def operation_label(item: Item) -> str:
    """How a take came to be, in a few words: "edit 0:42–1:05", "extend +30 s"."""
    request = item.meta.get("request", {})
    if item.operation == "edit" and request.get("region_end") is not None:
        return f"edit {_clock(request['region_start'])}–{_clock(request['region_end'])}"
    if item.operation == "extend":
        before = " before" if request.get("extend_side", "end") == "start" else ""
        return f"extend +{request.get('extend_seconds', 0):g} s{before}"
    if item.operation == "cover":
        return f"cover ({request.get('cover_strength', 1.0):.2g})"
    if item.operation == "stems":
        return f"stem {item.meta.get('stem', '')}".strip()
    if item.kind == "upload":
        return "upload"
    return "v1" if item.operation in ("generate", "") else item.operation


def history_label(chain: list[Item]) -> str:
    """A take's history, oldest first: "v1 → edit 0:42–1:05 → extend +30 s"."""
    return " → ".join(operation_label(item) for item in chain)


class Library:
    def __init__(self, root: Path, db: Database):
        self.root = root / "library"
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = db
        self._recover()

    # --- writing -------------------------------------------------------------------------

    def add(
        self,
        kind: str,
        meta: dict[str, Any],
        *,
        samples: np.ndarray | None = None,
        files: dict[str, bytes] | None = None,
        title: str = "",
        caption: str = "",
        parent_id: str | None = None,
        operation: str = "",
        job_id: str | None = None,
        take_index: int | None = None,
    ) -> Item:
        """Store a new item atomically and index it. `samples` is (2, n) float at 48 kHz."""
        if kind not in KINDS:
            raise ValueError(f"unknown library kind {kind!r}")
        item_id = uuid.uuid4().hex[:12]
        created = time.time()
        duration = samples.shape[-1] / audio_io.SAMPLE_RATE if samples is not None else None
        record = {
            "id": item_id,
            "kind": kind,
            "created": created,
            "title": title,
            "caption": caption,
            "duration": duration,
            "parent_id": parent_id,
            "operation": operation,
            "job_id": job_id,
            "take_index": take_index,
            "audio_file": AUDIO_FILE if samples is not None else None,
            **meta,
        }
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            if samples is not None:
                (staging / AUDIO_FILE).write_bytes(audio_io.encode(samples, "flac", "PCM_24"))
            for name, payload in (files or {}).items():
                (staging / name).write_bytes(payload)
            (staging / META_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=2))
            for child in staging.iterdir():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
            os.replace(staging, self.root / item_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._index(record)
        return self.get(item_id)

    def _index(self, record: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO items (id, kind, created, title, caption, duration, parent_id,"
            " operation, job_id, take_index, audio_file, meta_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record["id"],
                record["kind"],
                record["created"],
                record.get("title") or "",
                record.get("caption") or "",
                record.get("duration"),
                record.get("parent_id"),
                record.get("operation") or "",
                record.get("job_id"),
                record.get("take_index"),
                record.get("audio_file"),
                json.dumps(record, ensure_ascii=False),
            ),
        )

    def delete(self, item_id: str) -> None:
        """Delete an item and the items made from it that only exist through it (its stems)."""
        for child in self.children(item_id, kinds=("stem",)):
            self.delete(child.id)
        self.db.execute("DELETE FROM items WHERE id = ?", (item_id,))
        shutil.rmtree(self.root / item_id, ignore_errors=True)

    # --- reading -------------------------------------------------------------------------

    def get(self, item_id: str) -> Item:
        rows = self.db.query("SELECT * FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise ItemNotFound(f"No library item {item_id!r}; it may have been deleted.")
        return self._item(rows[0])

    def find(self, item_id: str) -> Item | None:
        try:
            return self.get(item_id)
        except ItemNotFound:
            return None

    def list(
        self, kinds: tuple[str, ...] = ("take",), limit: int = 200, offset: int = 0
    ) -> list[Item]:
        marks = ",".join("?" for _ in kinds)
        rows = self.db.query(
            f"SELECT * FROM items WHERE kind IN ({marks}) ORDER BY created DESC, rowid DESC"
            " LIMIT ? OFFSET ?",
            (*kinds, limit, offset),
        )
        return [self._item(row) for row in rows]

    def search(self, text: str, kinds: tuple[str, ...] = ("take",), limit: int = 200) -> list[Item]:
        """Items whose title or caption contains `text` (case-insensitive), newest first."""
        if not text.strip():
            return self.list(kinds, limit=limit)
        marks = ",".join("?" for _ in kinds)
        pattern = f"%{text.strip()}%"
        rows = self.db.query(
            f"SELECT * FROM items WHERE kind IN ({marks}) AND (title LIKE ? OR caption LIKE ?)"
            " ORDER BY created DESC, rowid DESC LIMIT ?",
            (*kinds, pattern, pattern, limit),
        )
        return [self._item(row) for row in rows]

    def for_job(self, job_id: str) -> list[Item]:
        rows = self.db.query(
            "SELECT * FROM items WHERE job_id = ? ORDER BY take_index, created", (job_id,)
        )
        return [self._item(row) for row in rows]

    def children(self, item_id: str, kinds: tuple[str, ...] = KINDS) -> list[Item]:
        marks = ",".join("?" for _ in kinds)
        rows = self.db.query(
            f"SELECT * FROM items WHERE parent_id = ? AND kind IN ({marks}) ORDER BY created",
            (item_id, *kinds),
        )
        return [self._item(row) for row in rows]

    def lineage(self, item_id: str) -> list[Item]:
        """The chain of items this one was made from, oldest first, ending with itself."""
        chain: list[Item] = []
        seen: set[str] = set()
        current: str | None = item_id
        while current and current not in seen:
            seen.add(current)
            item = self.find(current)
            if item is None:
                break
            chain.append(item)
            current = item.parent_id
        return list(reversed(chain))

    def read_audio(self, item_id: str) -> audio_io.Audio:
        item = self.get(item_id)
        if item.audio_file is None:
            raise ItemNotFound(f"Library item {item_id!r} has no audio.")
        return audio_io.read(item.audio_file)

    def file(self, item_id: str, name: str) -> Path:
        return self.root / item_id / name

    def preview_path(self, item: Item) -> Path:
        """A small MP3 of the master for the browser players, made once on first use.

        Players embed or stream the whole file; a 4-minute FLAC master is ~40 MB, its
        preview ~6 MB.
        """
        if item.audio_file is None:
            raise ItemNotFound(f"Library item {item.id!r} has no audio.")
        path = self.root / item.id / PREVIEW_FILE
        if not path.exists():
            samples = audio_io.read(item.audio_file).samples
            audio_io.write_atomic(path, audio_io.mp3_bytes(samples))
        return path

    def _item(self, row: Any) -> Item:
        meta = json.loads(row["meta_json"])
        audio_file = self.root / row["id"] / row["audio_file"] if row["audio_file"] else None
        return Item(
            id=row["id"],
            kind=row["kind"],
            created=row["created"],
            title=row["title"],
            caption=row["caption"],
            duration=row["duration"],
            parent_id=row["parent_id"],
            operation=row["operation"],
            job_id=row["job_id"],
            take_index=row["take_index"],
            audio_file=audio_file,
            meta=meta,
        )

    # --- start-up ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Drop half-written folders and re-index complete ones whose row never landed."""
        indexed = {row["id"] for row in self.db.query("SELECT id FROM items")}
        for folder in self.root.iterdir():
            if folder.name.startswith(".tmp-"):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            meta_path = folder / META_FILE
            if folder.is_dir() and folder.name not in indexed and meta_path.exists():
                try:
                    self._index(json.loads(meta_path.read_text()))
                except (ValueError, KeyError):
                    continue
        for item_id in indexed:
            if not (self.root / item_id / META_FILE).exists():
                self.db.execute("DELETE FROM items WHERE id = ?", (item_id,))
