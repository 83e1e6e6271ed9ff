"""QR codes as inline SVG (the `qrcode` library, pure Python, no image library needed).

Does: `qr_svg(text)` — an SVG element encoding `text`, for a sample label at the station and a certificate's
verification link in the cloud. Does not: HTML pages, or any I/O.
"""

from __future__ import annotations

import qrcode
import qrcode.image.svg


def qr_svg(text: str) -> str:
    """An ``<svg>`` element (no XML declaration) that encodes `text`, scalable by CSS."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    svg: bytes = image.to_string()
    out = svg.decode("utf-8")
    return out[out.index("<svg") :]
