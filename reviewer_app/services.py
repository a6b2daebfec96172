"""``Services``: the one read-only object the app's handlers share.

It holds the catalogue (demo + ``--data``), a small thread-safe LRU cache of opened
volumes and slides (rendering reads from memory, never from disk), and paths the
later tabs need (study database, models). Per-user state lives in ``gr.State``,
never here; uploads get random cache keys so users cannot reach each other's data.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.catalog import CatalogEntry, demo_entries, discover, open_entry
from core.errors import InputError
from core.io.volume import Volume
from core.render import make_palette


@dataclass
class OpenVolume:
    """A volume ready for display: the data plus its overlay colours and label names."""

    volume: Volume
    palette: np.ndarray | None
    label_names: dict[int, str]


class OpenCache:
    """LRU cache of opened entries, safe across Gradio's worker threads."""

    def __init__(self, capacity: int = 6) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, key: str, load) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:  # one load per key, even when several users ask at once
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = load()
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
            return value


@dataclass
class Services:
    """Shared, read-only application services.

    Attributes:
        catalog: openable entries (demo first, then ``--data``).
        db: study database path or SQLAlchemy URL (studies tab), if any.
        work_dir: where uploads and outputs go.
    """

    catalog: list[CatalogEntry]
    db: str | None = None
    work_dir: Path = field(default_factory=lambda: Path.cwd() / "synthdx-work")
    model_dirs: list[Path] = field(default_factory=list)
    label_map_library: list[Path] = field(default_factory=list)
    cache: OpenCache = field(default_factory=OpenCache)
    _uploads: dict[str, CatalogEntry] = field(default_factory=dict)
    _pipelines: OpenCache = field(default_factory=lambda: OpenCache(capacity=3))

    def entry(self, key: str) -> CatalogEntry:
        for e in self.catalog:
            if e.key == key:
                return e
        if key in self._uploads:
            return self._uploads[key]
        raise InputError(f"unknown image {key!r}; pick one from the list")

    def register_upload(self, path: str | Path, *, kind: str) -> CatalogEntry:
        """A private entry for an uploaded file; its random key is only known to the uploader."""
        key = "upload-" + secrets.token_urlsafe(12)
        entry = CatalogEntry(key, f"Upload: {Path(path).name}", kind, str(path))  # type: ignore[arg-type]
        self._uploads[key] = entry
        return entry

    def open(self, key: str) -> OpenVolume | Any:
        """The opened entry: ``OpenVolume`` for volumes, a ``Slide`` for slides."""
        entry = self.entry(key)

        def load():
            obj = open_entry(entry)
            if entry.kind == "slide":
                return obj
            names = obj.labels.present() if obj.labels is not None else {}
            return OpenVolume(obj, make_palette(obj.labels.names | names) if names else None, names)

        return self.cache.get(key, load)

    def _model_folders(self, read, keep=lambda spec: True) -> dict[str, Path]:
        """Model folders (each ``model_dirs`` entry and its subfolders) that ``read`` accepts and ``keep``
        selects, by display name "<card name> (<folder>)"; the first one found wins (shipped models first)."""
        found: dict[str, Path] = {}
        for folder in self.model_dirs:
            if not folder.is_dir():
                continue
            for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
                try:
                    spec = read(candidate)
                except InputError:
                    continue
                if keep(spec):
                    found.setdefault(f"{spec.name} ({candidate.name})", candidate)
        return found

    def inpaint_models(self) -> dict[str, Path]:
        """Readable inpainting model folders by display name (shipped models first)."""
        from core.pipelines.loading import read_model_folder

        return self._model_folders(read_model_folder)

    def pipeline(self, model_path: str | Path):
        """The inpainting pipeline of a model folder, loaded once and shared (inference only)."""
        from core.pipelines.ct_inpaint import CTInpaintPipeline

        path = str(Path(model_path).resolve())
        return self._pipelines.get(path, lambda: CTInpaintPipeline.from_pretrained(path))

    def slide_models(self) -> dict[str, Path]:
        """Tiled H&E model folders (a card of kind latent-diffusion, domain he, with a ControlNet) by display name."""
        from core.pipelines.label_models import read_label_model

        return self._model_folders(
            read_label_model, lambda s: s.domain == "he" and s.kind == "latent-diffusion" and s.has_controlnet
        )

    def slide_pipeline(self, model_path: str | Path):
        """The tiled H&E pipeline of a model folder, loaded once and shared (inference only)."""
        from core.pipelines.histo_tiled import HistoTiledPipeline

        path = str(Path(model_path).resolve())
        return self._pipelines.get(f"slide:{path}", lambda: HistoTiledPipeline.from_pretrained(path))

    def controlnet_models(self) -> dict[str, Path]:
        """Label-map model folders with a ControlNet (``core.pipelines.label_models``) by display name."""
        from core.pipelines.label_models import read_label_model

        return self._model_folders(read_label_model, lambda s: s.has_controlnet and s.classes)

    def label_pipeline(self, model_path: str | Path):
        """The ControlNet pipeline of a model folder, loaded once and shared (inference only)."""
        from core.pipelines.controlnet import ControlNetPipeline

        path = str(Path(model_path).resolve())
        return self._pipelines.get(f"controlnet:{path}", lambda: ControlNetPipeline.from_pretrained(path))

    def shape_library(self):
        """Lesion outlines users can place: procedural ones plus tumours from KiTS-style label maps."""
        from core.mask_library import procedural_shapes, shapes_from_label_maps

        def load():
            return {**procedural_shapes(), **shapes_from_label_maps(self.label_map_library)}

        return self.cache.get("__shape_library__", load)

    def prefetch(self, key: str) -> None:
        """Open an entry in a background thread (the demo phantom takes seconds to generate)."""
        threading.Thread(target=self.open, args=(key,), daemon=True, name=f"prefetch-{key}").start()


def build_services(
    *,
    demo: bool,
    data_dir: str | Path | None,
    db: str | None,
    work_dir: Path | None = None,
    models_dir: str | Path | None = None,
) -> Services:
    """Assemble the catalogue (demo entries when ``demo`` or when nothing else is given) and model folders."""
    from core.settings import shipped_models

    catalog: list[CatalogEntry] = []
    library: list[Path] = []
    if data_dir is not None:
        catalog += discover(data_dir)
        if not catalog and not demo:
            raise InputError(f"--data {data_dir}: no DICOM series, NIfTI, case folders or images found")
        # KiTS-style label maps without their image: a library of real tumour outlines
        library = sorted(
            p
            for p in Path(data_dir).rglob("segmentation.nii.gz")
            if not (p.parent / "imaging.nii.gz").exists()
        )
    if demo or data_dir is None:
        catalog = demo_entries() + catalog
    model_dirs = [shipped_models()] + ([Path(models_dir)] if models_dir else [])
    return Services(
        catalog=catalog,
        db=db,
        work_dir=work_dir or Path.cwd() / "synthdx-work",
        model_dirs=model_dirs,
        label_map_library=library,
    )
