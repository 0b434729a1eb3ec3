"""Decoding one image from bytes read out of a container (a tar member, a parquet cell)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError


def decode_image(data: bytes, name: str) -> Image.Image:
    """The image encoded in ``data`` (any format PIL reads), decoded now.

    Args:
        data: the encoded bytes.
        name: what holds them (a member, a row), for the message.

    Raises:
        OSError: bytes that are not a complete image, with a message that names ``name`` and is the
            same on every run (the embed loop lists the item and it in ``skipped.txt``).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: a truncated image fails here, inside the loader's try
            return image.copy()
    except UnidentifiedImageError:  # PIL's message names the BytesIO object, a different address each run
        raise OSError(f"{name}: {len(data)} bytes that are no image PIL can read") from None
