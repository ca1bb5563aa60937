"""Screenshot a report (or any local HTML file) in headless Chromium, to check that it looks right.

    python scripts/report_screenshot.py RUN/report.html shot.png [--width 1280] [--height 6000] [--parts]

Needs a Chromium binary: Debian's ``chromium`` package (``apt-get install chromium``), or set ``CHROMIUM``
to another Chromium / Chrome executable. The browser is started with networking off, so a page that tried to
load anything from elsewhere would show it as broken. ``--parts`` also writes ``shot.partN.png`` crops of
1,400 px height, small enough to read one at a time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Headless, no sandbox (root in a container), and none of the background connections Chromium makes on start.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, else the first of the usual names on ``PATH``."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for name in CANDIDATES if (p := shutil.which(name))), None)


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 6000, timeout: float = 120.0) -> Path:
    """Render ``html`` at ``width`` x ``height`` CSS pixels into the PNG ``out``."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(
            "no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/chrome"
        )
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            html.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    if not out.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot to {out}")
    return out


def split(png: Path, part_height: int = 1400) -> list[Path]:
    """Crop the screenshot into parts of ``part_height`` pixels."""
    from PIL import Image

    image = Image.open(png)
    parts = []
    for i, top in enumerate(range(0, image.height, part_height)):
        path = png.with_suffix(f".part{i}.png")
        image.crop((0, top, image.width, min(image.height, top + part_height))).save(path)
        parts.append(path)
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--parts", action="store_true", help="also write 1,400 px high crops")
    args = parser.parse_args(argv)
    try:
        out = screenshot(args.html, args.out, args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.SubprocessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    for part in split(out) if args.parts else []:
        print(part)
    return 0


if __name__ == "__main__":
    sys.exit(main())
