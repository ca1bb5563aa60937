"""ALOI (Amsterdam Library of Object Images) viewpoint, illumination-direction and illumination-colour sets,
as P1 builds them (PAPERS.md §1.4, official ``extract_generic_ALOI_features.py``).

Archives and layout. ALOI's downloads (https://aloi.science.uva.nl/tars/) are ``aloi_red<r>_<kind>.tar`` with
``r`` the reduction (2: 384x288, 4: 192x144) and ``kind`` one of ``view`` / ``ill`` / ``col``; ``tar -xf``
gives ``png<r>/<obj>/<obj>_<code>.png`` for objects 1..1000 (``png/`` for the full resolution):

* ``view``: ``<obj>_r<angle>.png``, 72 viewpoints (``r0`` .. ``r355`` in 5° steps);
* ``ill``: ``<obj>_l<i>c<j>.png``, 24 illumination directions (light ``l1``-``l8`` x camera ``c1``-``c3``);
* ``col``: ``<obj>_i<t>.png``, 12 illumination colour temperatures (``i110`` .. ``i250``).

P1's README renames each extracted ``png2`` to ``ALOI_viewpoint`` / ``ALOI_illumdir`` / ``ALOI_illumcolor``.
The root may be any of: such a renamed folder's parent, the folder holding the ``png*`` folder (the three
archives can be extracted into one place: their file names tell the kinds apart), or the object folders' parent
itself.

Sets: one set per object holding all its images of the kind; the class is the object (C = 1000, so the firing
percentile is 95). Images are resized to ``size x size`` (P1: 128) without keeping the aspect ratio.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from invarlab.data.sets import InvarianceSets
from invarlab.errors import DataError

__all__ = ["ALOI_KINDS", "aloi_sets", "find_aloi_dir"]

ALOI_KINDS = ("viewpoint", "illum_direction", "illum_color")
# Folder names of P1's README, the archive suffixes, and each kind's file-name code after "<obj>_".
_RENAMED = {
    "viewpoint": "ALOI_viewpoint",
    "illum_direction": "ALOI_illumdir",
    "illum_color": "ALOI_illumcolor",
}
_ARCHIVE = {"viewpoint": "view", "illum_direction": "ill", "illum_color": "col"}
_CODE = {"viewpoint": r"r(\d+)", "illum_direction": r"l(\d+)c(\d+)", "illum_color": r"i(\d+)"}
_EXAMPLE = {
    "viewpoint": "<obj>_r<angle>.png",
    "illum_direction": "<obj>_l<i>c<j>.png",
    "illum_color": "<obj>_i<t>.png",
}
_PNG_DIRS = ("png2", "png4", "png", "png8")


def _objects(folder: Path) -> list[tuple[int, Path]]:
    """Numbered object folders, in numeric order."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted((int(e.name), Path(e.path)) for e in entries if e.is_dir() and e.name.isdigit())


def _pattern(kind: str, obj: int) -> re.Pattern[str]:
    return re.compile(rf"{obj}_{_CODE[kind]}\.png", re.IGNORECASE)


def _has_kind(folder: Path, kind: str) -> bool:
    objects = _objects(folder)
    if not objects:
        return False
    obj, path = objects[0]
    pat = _pattern(kind, obj)
    return any(pat.fullmatch(name) for name in os.listdir(path))


def find_aloi_dir(root: str | os.PathLike[str], kind: str) -> Path:
    """The folder of numbered object folders holding ``kind``'s images under ``root`` (module docstring)."""
    if kind not in ALOI_KINDS:
        raise DataError(f"unknown ALOI kind {kind!r}: use one of {', '.join(ALOI_KINDS)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"ALOI root '{root}' does not exist or is not a directory; give --root the ALOI folder"
        )
    candidates = [root / _RENAMED[kind], *(root / d for d in _PNG_DIRS), root]
    for folder in candidates:
        if folder.is_dir() and _has_kind(folder, kind):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"ALOI {kind}: no object folders with {_EXAMPLE[kind]} images under '{root}' (looked in {tried}); "
        f"download https://aloi.science.uva.nl/tars/aloi_red2_{_ARCHIVE[kind]}.tar and extract it into "
        f"'{root}' (tar -xf gives png2/<obj>/...)"
    )


def aloi_sets(
    root: str | os.PathLike[str], kind: str, size: int = 128, max_objects: int = 0
) -> InvarianceSets:
    """P1's ALOI ``kind`` sets: every image of each object is one set, class = object.

    ``max_objects`` > 0 keeps the first objects in numeric order (a quick run); 0 keeps all. Extra metadata:
    ``object``; ``angle`` (viewpoint, degrees), ``light`` and ``camera`` (illum_direction), ``temperature``
    (illum_color, the ``i`` code)."""
    folder = find_aloi_dir(root, kind)
    objects = _objects(folder)
    if max_objects > 0:
        objects = objects[:max_objects]
    paths: list[Path] = []
    ids: list[int] = []
    codes: list[tuple[int, ...]] = []
    for obj, obj_dir in objects:
        pat = _pattern(kind, obj)
        found = []
        for name in os.listdir(obj_dir):
            m = pat.fullmatch(name)
            if m:
                found.append((tuple(int(g) for g in m.groups()), obj_dir / name))
        for code, path in sorted(found):  # the sweep's order (angle, light/camera, temperature)
            paths.append(path)
            ids.append(obj)
            codes.append(code)
    if not paths:
        raise DataError(f"ALOI {kind}: '{folder}' has object folders but no {_EXAMPLE[kind]} images in them")
    code = np.asarray(codes, dtype=np.int64)
    extra: dict[str, np.ndarray] = {"object": np.asarray(ids)}
    if kind == "viewpoint":
        extra["angle"] = code[:, 0]
    elif kind == "illum_direction":
        extra["light"], extra["camera"] = code[:, 0], code[:, 1]
    else:
        extra["temperature"] = code[:, 0]
    uniq, class_ids = np.unique(np.asarray(ids), return_inverse=True)
    return InvarianceSets(
        "aloi",
        kind,
        paths,
        set_ids=np.asarray(ids),
        class_ids=class_ids,
        class_names=[str(o) for o in uniq],
        size=size,
        extra=extra,
    )
