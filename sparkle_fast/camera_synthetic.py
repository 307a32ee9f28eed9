"""Synthetic clips of known camera motion, for the camera-motion tests, calibration and bench.

A clip is a real photograph (scikit-image's sample data) seen through a camera whose motion is a known homography
per frame, optionally with moving foreground objects (textured patches on their own path), sensor noise, global
brightness flicker and a scene cut. `make_clip` returns the frames and the true homography from frame 0 to every
frame, so a test can check the recovered homographies and the static/moving decision.

Motion kinds (per-frame magnitude `speed` in pixels at the frame corners, roughly):
  static, pan, zoom, rotate, shake (random jitter around the start, zero mean), drift (pan + slight zoom),
  combo (pan + zoom + rotation), turn (the camera turns about an axis through its center, as a real pan or tilt
  does: a homography with perspective terms, K R K^-1 with a focal length of one frame width; the frame's middle
  moves `speed` px per frame and its far side more). All but turn are affine maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOTIONS = ("static", "pan", "zoom", "rotate", "shake", "drift", "combo", "turn")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@dataclass
class SyntheticClip:
    frames: np.ndarray           # uint8 (T, H, W, 3)
    homographies: np.ndarray     # float64 (T, 3, 3): frame-0 pixel -> frame-t pixel (background)
    moving: bool                 # the camera moves (motion != "static")
    cut_at: int | None           # frames >= cut_at come from another photograph


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _about_center(m: np.ndarray, cx: float, cy: float) -> np.ndarray:
    t = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1.0]])
    ti = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    return t @ m @ ti


def camera_path(motion: str, n_frames: int, size: tuple[int, int], speed: float, rng: np.random.Generator):
    """float64 (T, 3, 3): homographies mapping frame-0 pixels to frame-t pixels for a camera moving `speed` px per
    frame (at the corners)."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {MOTIONS}")
    height, width = size
    cx, cy = (width - 1) / 2, (height - 1) / 2
    radius = float(np.hypot(cx, cy))
    angle = rng.uniform(0, 2 * np.pi)
    out = []
    for t in range(n_frames):
        m = np.eye(3)
        if motion == "pan":
            m[0, 2], m[1, 2] = speed * t * np.cos(angle), speed * t * np.sin(angle)
        elif motion == "zoom":
            s = 1 + speed * t / radius
            m = _about_center(np.diag([s, s, 1.0]), cx, cy)
        elif motion == "rotate":
            a = speed * t / radius
            m = _about_center(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]]), cx, cy)
        elif motion == "shake":
            if t > 0:
                m[0, 2], m[1, 2] = rng.normal(0, speed, 2)
        elif motion in ("drift", "combo"):
            s = 1 + (0.3 if motion == "drift" else 0.5) * speed * t / radius
            a = (0.0 if motion == "drift" else 0.5) * speed * t / radius
            r = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1.0]])
            m = _about_center(r, cx, cy)
            m[0, 2] += 0.7 * speed * t * np.cos(angle)
            m[1, 2] += 0.7 * speed * t * np.sin(angle)
        elif motion == "turn":
            focal = float(width)
            k = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
            # turning by theta about the axis perpendicular to the image-plane direction `angle` moves the middle
            # of the frame by focal * tan(theta) along that direction
            theta = np.arctan(speed * t / focal)
            axis = np.array([-np.sin(angle), np.cos(angle), 0.0])
            cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
            rotation = np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * cross @ cross
            m = k @ rotation @ np.linalg.inv(k)
            m = m / m[2, 2]
        out.append(m)
    return np.stack(out)


def make_clip(motion: str = "pan", *, n_frames: int = 6, size: tuple[int, int] = (144, 192), speed: float = 2.0,
              photo: str = "astronaut", subject_fraction: float = 0.0, subject_speed: float = 4.0,
              noise: float = 0.0, flicker: float = 0.0, cut_at: int | None = None, seed: int = 0) -> SyntheticClip:
    """A clip of `n_frames` (height, width) frames: `photo` seen by a camera moving as `motion` at `speed` px per
    frame, with a textured subject covering `subject_fraction` of the frame moving coherently at `subject_speed`
    px per frame in a random direction, Gaussian noise of std `noise` (gray levels), global brightness flicker
    (gain 1 +- flicker, random per frame) and a cut to another photograph at frame `cut_at`."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = size
    source = _photo(photo)
    # The camera sees the middle of the photograph scaled so that the clip's motion never runs off its edge.
    scale = max(height * 1.6 / source.shape[0], width * 1.6 / source.shape[1])
    base = cv2.resize(source, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    oy, ox = (base.shape[0] - height) / 2, (base.shape[1] - width) / 2
    view = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1.0]])  # photo pixel -> frame-0 pixel
    path = camera_path(motion, n_frames, size, speed, rng)
    other = _photo(PHOTOS[(PHOTOS.index(photo) + 1) % len(PHOTOS)] if photo in PHOTOS else "coffee")
    other = cv2.resize(other, (width, height), interpolation=cv2.INTER_AREA)

    subject = None
    if subject_fraction > 0:
        sh = int(round(height * np.sqrt(subject_fraction)))
        sw = int(round(width * np.sqrt(subject_fraction)))
        patch_src = _photo("chelsea" if photo != "chelsea" else "coffee")
        subject = cv2.resize(patch_src, (sw, sh), interpolation=cv2.INTER_AREA)
        sub_angle = rng.uniform(0, 2 * np.pi)
        sub_origin = np.array([rng.uniform(0, max(width - sw, 1)), rng.uniform(0, max(height - sh, 1))])

    frames = []
    for t in range(n_frames):
        if cut_at is not None and t >= cut_at:
            frame = other.copy()
        else:
            frame = cv2.warpPerspective(base, path[t] @ view, (width, height), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT)
        if subject is not None:
            pos = sub_origin + subject_speed * t * np.array([np.cos(sub_angle), np.sin(sub_angle)])
            m = np.array([[1, 0, pos[0]], [0, 1, pos[1]]], np.float64)
            mask = cv2.warpAffine(np.ones(subject.shape[:2], np.uint8), m, (width, height), flags=cv2.INTER_NEAREST)
            layer = cv2.warpAffine(subject, m, (width, height), flags=cv2.INTER_LINEAR)
            frame = np.where(mask[..., None] > 0, layer, frame)
        frame = frame.astype(np.float32)
        if flicker > 0:
            frame *= 1 + rng.uniform(-flicker, flicker)
        if noise > 0:
            frame += rng.normal(0, noise, frame.shape)
        frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    return SyntheticClip(np.stack(frames), path, motion != "static", cut_at)


def corner_error(h_est: np.ndarray, h_true: np.ndarray, size: tuple[int, int]) -> float:
    """Largest distance (px) between the four frame corners mapped by two homographies."""
    height, width = size
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64).T

    def mapped(h):
        p = h @ corners
        return p[:2] / p[2]

    return float(np.linalg.norm(mapped(h_est) - mapped(h_true), axis=0).max())
