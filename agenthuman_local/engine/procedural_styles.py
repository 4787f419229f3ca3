"""The shipped illustrated characters: colours and proportions, nothing that draws.

Lengths are in head units: the face centre is the origin, y points down, the chin sits at
y = 0.5 and the forehead under the hair at y = -0.5. `procedural_paint` and `procedural` read
these. The roster (ids, names, and which style each draws) is `avatars.SHIPPED_ROSTER`, written
once there; a new character is one more `Style` here and one more row there.
"""

from __future__ import annotations

from dataclasses import dataclass

from agenthuman_local.avatars import SHIPPED_ROSTER

RGB = tuple[float, float, float]


def _hex(code: str) -> RGB:
    code = code.lstrip("#")
    r, g, b = (int(code[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    return (r, g, b)


@dataclass(frozen=True)
class Style:
    # Colours.
    skin: RGB
    skin_shade: RGB
    blush: RGB
    lip_upper: RGB
    lip_lower: RGB
    hair: RGB
    hair_light: RGB
    brow: RGB
    iris: RGB
    clothes: RGB
    clothes_shade: RGB
    accent: RGB  # shirt collar / neckline trim
    backdrop_top: RGB
    backdrop_bottom: RGB
    # Shapes.
    hair_kind: str  # "bob" (chin length, side-swept fringe) or "short"
    clothes_kind: str  # "scoop" (top with a scoop neckline) or "blazer" (jacket over a shirt)
    face_rx: float = 0.35
    chin_taper: float = 0.4  # how much the face narrows towards the chin
    jaw_power: float = 2.0  # 2 = oval, higher = squarer jaw
    eye_width: float = 0.068
    eye_height: float = 0.040
    eye_tilt: float = 0.0  # outer corner lift
    lashes: float = 0.006  # lash-line thickness
    brow_thickness: float = 0.02
    mouth_width: float = 0.1
    lip_fullness: float = 1.0
    neck_width: float = 0.125
    blush_strength: float = 0.25
    stubble: float = 0.0


ADA = Style(
    skin=_hex("f3c9a8"),
    skin_shade=_hex("d89a7c"),
    blush=_hex("ec8f86"),
    lip_upper=_hex("b8505a"),
    lip_lower=_hex("d06a70"),
    hair=_hex("6b2f1c"),
    hair_light=_hex("a8583a"),
    brow=_hex("5a2a1a"),
    iris=_hex("3f7d5a"),
    clothes=_hex("1f8a87"),
    clothes_shade=_hex("14605e"),
    accent=_hex("f0e6d8"),
    backdrop_top=_hex("cfdde8"),
    backdrop_bottom=_hex("8fa7bd"),
    hair_kind="bob",
    clothes_kind="scoop",
    face_rx=0.34,
    chin_taper=0.36,
    jaw_power=2.0,
    eye_width=0.072,
    eye_height=0.044,
    eye_tilt=0.012,
    lashes=0.0085,
    brow_thickness=0.017,
    mouth_width=0.098,
    lip_fullness=1.15,
    neck_width=0.125,
    blush_strength=0.3,
)

BEN = Style(
    skin=_hex("b97f5a"),
    skin_shade=_hex("8c5638"),
    blush=_hex("b76650"),
    lip_upper=_hex("9a5a4a"),
    lip_lower=_hex("ad6a58"),
    hair=_hex("2a1d17"),
    hair_light=_hex("4e3a2e"),
    brow=_hex("24170f"),
    iris=_hex("4a3020"),
    clothes=_hex("283a5e"),
    clothes_shade=_hex("1a2740"),
    accent=_hex("dfe8f3"),
    backdrop_top=_hex("efe1cc"),
    backdrop_bottom=_hex("c7a882"),
    hair_kind="short",
    clothes_kind="blazer",
    face_rx=0.37,
    chin_taper=0.22,
    jaw_power=2.8,
    eye_width=0.066,
    eye_height=0.036,
    eye_tilt=-0.004,
    lashes=0.0055,
    brow_thickness=0.027,
    mouth_width=0.106,
    lip_fullness=0.85,
    neck_width=0.16,
    blush_strength=0.12,
    stubble=0.1,
)

_BY_NAME = {"ada": ADA, "ben": BEN}
# By avatar id, as the roster assigns them.
STYLES: dict[str, Style] = {avatar_id: _BY_NAME[style] for avatar_id, _, style in SHIPPED_ROSTER}
