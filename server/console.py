"""The web console (issue 38): static HTML, CSS and JavaScript shipped in the package
(`server/console/`), served by the REST gateway at `GET /console` on its port, TLS
and tokens; no build step and nothing from another site, so it works offline.

The page calls the REST API as any client does. What keeps a hostile example's text
inert: the script inserts every server text with `textContent`, and the
Content-Security-Policy below lets the page run only its own script file (no inline
script, no `eval`, no other origin), load only its own style sheet, and connect only
to this origin; it may not be framed (clickjacking) and sends no referrer.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

DIRECTORY = Path(__file__).with_name("console")
#: path -> (file, content type)
ASSETS = {
    "/console": ("index.html", "text/html; charset=utf-8"),
    "/console/": ("index.html", "text/html; charset=utf-8"),
    "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", "text/css; charset=utf-8"),
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = (
    ("Content-Security-Policy", POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-cache"),
)


def is_asset(path: str) -> bool:
    return path in ASSETS


@cache
def asset(path: str) -> tuple[bytes, str]:
    """(body, content type) of a console path (read once)."""
    name, kind = ASSETS[path]
    return (DIRECTORY / name).read_bytes(), kind
