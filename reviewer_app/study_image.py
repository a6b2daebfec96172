"""``StudyImage``: the reader page's image component (its own module: Gradio writes a
``.pyi`` stub next to every component subclass, and ``reviewer_app/*.pyi`` is ignored)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from gradio.data_classes import ImageData

from reviewer_app.components import SliceImage, encode_png
from reviewer_app.study_reader import Shown


class StudyImage(SliceImage):
    """``SliceImage`` whose URL folder is a keyed hash of (case salt, PNG bytes).

    Same encoder and neutral ``view.png`` name for every case; the key is random per
    server process, so a URL cannot be matched to an image offline, and the salt keeps a
    hidden duplicate's URL different from its original's.
    """

    # No __init__ override: Gradio builds the component config from the constructor's signature.
    def _key(self) -> bytes:
        return self.__dict__.setdefault("_url_key", secrets.token_bytes(32))  # atomic in CPython

    def postprocess(self, value):  # type: ignore[override]
        if not isinstance(value, Shown):
            return super().postprocess(value)
        data = encode_png(value.pixels)
        digest = hmac.new(self._key(), value.salt.encode() + b"\0" + data, hashlib.sha256).hexdigest()[:40]
        folder = Path(self.GRADIO_CACHE) / digest
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "view.png"
        if not path.exists():
            path.write_bytes(data)
        return ImageData(path=str(path), orig_name="view.png")
