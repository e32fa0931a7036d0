"""Judging a picture against what its caption says: background, shape colour, shape class, position.

How a picture is read:
1. Background: every border pixel is named by its nearest palette colour; the most common name
   wins, and the median RGB of the pixels with that name is the measured background colour.
2. Foreground: pixels further than `FOREGROUND_DISTANCE` (RGB) from the measured background.
   Connected groups (8-neighbourhood) of at least `MIN_AREA` pixels are the detected shapes.
3. Colour of a shape: the median RGB of its inner pixels (one pixel eroded where the shape is big
   enough, to skip the blended edge), named by the nearest palette colour.
4. Shape class: a small CNN (`ShapeClassifier`) on the shape's foreground map, cropped square around
   it and resized to 32x32. It is trained on generator pictures with blur and noise added (so it
   also reads the softer pictures a model draws) by `python -m tools.demo.checker --train`; its
   weights are `shape_classifier.safetensors` beside this file.
5. Position: the shape's centroid in a 3x3 grid whose lines lie at 3/8 and 5/8 of the side, half
   way between the generator's cell centres (1/4, 1/2, 3/4): a tolerance of 1/8 of the side.

Single-shape captions: the largest detected shape is the named one. Multi-shape captions: every
clause must be matched by its own detected shapes (as many as its count) agreeing on every
attribute it mentions, and no shape may be left over; `Judgement.scene_ok` says whether that holds.
The quality targets are measured on single-shape captions only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from tools.demo import shapes as sh
from tools.demo.captions import SceneSpec, ShapeSpec

WEIGHTS_PATH = Path(__file__).with_name("shape_classifier.safetensors")
CROP = 32
FOREGROUND_DISTANCE = 40.0
MIN_AREA = 8
BIG_EXTENT = 0.32  # bounding-box side / picture side above which a shape counts as big

_PALETTE_NAMES = list(sh.PALETTE)
_PALETTE = np.array([sh.PALETTE[c] for c in _PALETTE_NAMES], dtype=np.float32)


# --- colours ---------------------------------------------------------------------------------------------


def nearest_colors(rgb: np.ndarray) -> np.ndarray:
    """Index into the palette of the nearest named colour for each (..., 3) RGB value."""
    d = ((np.asarray(rgb, dtype=np.float32)[..., None, :] - _PALETTE) ** 2).sum(-1)
    return d.argmin(-1)


def nearest_color(rgb: np.ndarray | tuple[float, float, float]) -> str:
    return _PALETTE_NAMES[int(nearest_colors(np.asarray(rgb, dtype=np.float32)[None])[0])]


def background_of(image: np.ndarray) -> tuple[str, np.ndarray]:
    """(colour name, measured RGB) of a picture's background, read from its border pixels."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]]).astype(np.float32)
    names = nearest_colors(border)
    winner = int(np.bincount(names, minlength=len(_PALETTE_NAMES)).argmax())
    return _PALETTE_NAMES[winner], np.median(border[names == winner], axis=0)


# --- detection -------------------------------------------------------------------------------------------


@dataclass
class Detection:
    """One shape found in a picture."""

    color: str
    position: str
    size: str
    centroid: tuple[float, float]
    area: int
    bbox: tuple[int, int, int, int]
    """(x0, y0, x1, y1), exclusive end"""
    crop: np.ndarray = field(repr=False)
    """(CROP, CROP) float32 foreground map for the classifier"""
    shape: str | None = None
    confidence: float = 0.0


def position_of(cx: float, cy: float, side: int) -> str:
    def third(v: float) -> int:
        return 0 if v < 0.375 * side else (2 if v > 0.625 * side else 1)

    return sh.CELL_POSITION[(third(cx), third(cy))]


def _crop(soft: np.ndarray, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """A square window around `bbox` (a one-pixel margin), resized to CROP x CROP."""
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0) + 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    h, w = soft.shape
    window = np.zeros((side, side), dtype=np.float32)
    sx0, sy0 = max(0, left), max(0, top)
    sx1, sy1 = min(w, left + side), min(h, top + side)
    window[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = soft[sy0:sy1, sx0:sx1]
    t = torch.from_numpy(window)[None, None]
    return torch.nn.functional.interpolate(t, size=(CROP, CROP), mode="bilinear", antialias=True,
                                           align_corners=False)[0, 0].numpy()


def detect(image: np.ndarray) -> tuple[str, list[Detection]]:
    """The background colour name and the shapes of a (H, W, 3) uint8 picture, largest first
    (without classes: see `ShapeClassifier.classify`)."""
    image = np.asarray(image)
    background, bg_rgb = background_of(image)
    distance = np.sqrt(((image.astype(np.float32) - bg_rgb) ** 2).sum(-1))
    mask = distance > FOREGROUND_DISTANCE
    soft = np.clip((distance - 0.5 * FOREGROUND_DISTANCE) / FOREGROUND_DISTANCE, 0.0, 1.0)
    labels, _count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    side = image.shape[1]
    found: list[Detection] = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        own = labels[slices] == index
        area = int(own.sum())
        if area < MIN_AREA:
            continue
        ys, xs = np.nonzero(own)
        y0, x0 = slices[0].start, slices[1].start
        bbox = (x0, y0, slices[1].stop, slices[0].stop)
        core = ndimage.binary_erosion(own) if area >= 30 else own
        if core.sum() < 3:
            core = own
        color = nearest_color(np.median(image[slices][core].astype(np.float32), axis=0))
        cx, cy = float(xs.mean() + x0 + 0.5), float(ys.mean() + y0 + 0.5)
        component_soft = np.where(ndimage.binary_dilation(labels == index), soft, 0.0).astype(np.float32)
        extent = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / side
        found.append(Detection(color=color, position=position_of(cx, cy, side),
                               size="big" if extent > BIG_EXTENT else "small", centroid=(cx, cy), area=area,
                               bbox=bbox, crop=_crop(component_soft, bbox)))
    found.sort(key=lambda d: -d.area)
    return background, found


# --- the shape classifier --------------------------------------------------------------------------------


class ShapeNet(torch.nn.Module):
    """Three conv layers and two linear ones on a 32x32 foreground map (about 47k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
                                        torch.nn.Linear(64, len(sh.SHAPES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ShapeClassifier:
    """Names the shape of each detection."""

    def __init__(self, net: ShapeNet) -> None:
        self.net = net.eval()

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> ShapeClassifier:
        from safetensors.torch import load_file

        net = ShapeNet()
        net.load_state_dict(load_file(str(path)))
        return cls(net)

    def save(self, path: Path = WEIGHTS_PATH, metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path), metadata=metadata)

    @torch.inference_mode()
    def predict(self, crops: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Class names and confidences for (N, CROP, CROP) foreground maps."""
        if len(crops) == 0:
            return [], np.zeros(0, dtype=np.float32)
        probs = torch.softmax(self.net(torch.from_numpy(np.asarray(crops, dtype=np.float32))[:, None]), -1)
        conf, idx = probs.max(-1)
        return [sh.SHAPES[i] for i in idx.tolist()], conf.numpy()

    def classify(self, detections: list[Detection]) -> list[Detection]:
        names, conf = self.predict(np.stack([d.crop for d in detections]) if detections else np.zeros((0, CROP, CROP)))
        for d, name, c in zip(detections, names, conf, strict=True):
            d.shape, d.confidence = name, float(c)
        return detections


_default_classifier: ShapeClassifier | None = None


def default_classifier() -> ShapeClassifier:
    """The shipped classifier, loaded once per process."""
    global _default_classifier
    if _default_classifier is None:
        _default_classifier = ShapeClassifier.load()
    return _default_classifier


# --- judging ---------------------------------------------------------------------------------------------


@dataclass
class Judgement:
    """How a picture agrees with a caption. Attribute checks the caption does not ask for are None."""

    background: str
    detections: list[Detection]
    background_ok: bool | None = None
    color_ok: bool | None = None
    shape_ok: bool | None = None
    position_ok: bool | None = None
    size_ok: bool | None = None
    scene_ok: bool = False
    """every clause matched by its own shapes and nothing left over"""


def _matches(d: Detection, spec: ShapeSpec) -> bool:
    return (d.shape == spec.shape and (spec.color is None or d.color == spec.color)
            and (spec.position is None or d.position == spec.position)
            and (spec.size is None or d.size == spec.size))


def judge(image: np.ndarray, spec: SceneSpec, classifier: ShapeClassifier | None = None) -> Judgement:
    """Judge a (H, W, 3) uint8 picture against a caption's spec."""
    background, detections = detect(image)
    (classifier or default_classifier()).classify(detections)
    result = Judgement(background=background, detections=detections)
    if spec.background is not None:
        result.background_ok = background == spec.background
    if len(spec.shapes) == 1 and spec.shapes[0].count == 1:
        want = spec.shapes[0]
        main = detections[0] if detections else None
        result.shape_ok = main is not None and main.shape == want.shape
        if want.color is not None:
            result.color_ok = main is not None and main.color == want.color
        if want.position is not None:
            result.position_ok = main is not None and main.position == want.position
        if want.size is not None:
            result.size_ok = main is not None and main.size == want.size
    # Scene check (any caption): greedy matching, most constrained clauses first.
    free = list(detections)
    ok = True
    clauses = sorted(spec.shapes, key=lambda s: -sum(v is not None for v in (s.color, s.position, s.size)))
    for clause in clauses:
        for _ in range(clause.count):
            hit = next((d for d in free if _matches(d, clause)), None)
            if hit is None:
                ok = False
                break
            free.remove(hit)
    result.scene_ok = ok and not free and result.background_ok is not False
    return result


# --- training the classifier -----------------------------------------------------------------------------


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, resampling softness and noise of the kind a small generative model's pictures show."""
    from PIL import Image, ImageFilter

    im = Image.fromarray(image)
    if rng.random() < 0.7:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.1))))
    if rng.random() < 0.3:
        side = im.size[0]
        im = im.resize((side // 2, side // 2), Image.BILINEAR).resize((side, side), Image.BILINEAR)
    out = np.asarray(im, dtype=np.float32)
    out = out + rng.normal(0.0, float(rng.uniform(0.0, 8.0)), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def labelled_crops(seed: int, count: int, *, degraded: float, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Crops of detected shapes in `count` generator pictures ("checker" split, every combination)
    and their true classes. A fraction `degraded` of the pictures is blurred/noised first. A
    detection takes the class of the drawn shape whose centre it is nearest to."""
    from tools.demo.dataset import make_sample

    rng = np.random.default_rng([seed, 99])
    crops: list[np.ndarray] = []
    labels: list[int] = []
    for i in range(count):
        sample = make_sample(seed, i, split="checker", size=size)
        image = degrade(sample.image, rng) if rng.random() < degraded else sample.image
        _, found = detect(image)
        for d in found:
            truth = min(sample.shapes, key=lambda s: (s.cx - d.centroid[0]) ** 2 + (s.cy - d.centroid[1]) ** 2)
            crops.append(d.crop)
            labels.append(sh.SHAPES.index(truth.shape))
    return np.stack(crops), np.array(labels, dtype=np.int64)


def train_classifier(seed: int = 0, pictures: int = 6000, epochs: int = 12, log: bool = True) -> ShapeClassifier:
    """Train the shape CNN on generator pictures (half of them degraded)."""
    x, y = labelled_crops(seed, pictures, degraded=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ShapeNet()
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(x) + 127) // 128))
        xt, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for start in range(0, len(xt), 128):
                idx = order[start:start + 128]
                batch = xt[idx]
                if epoch > 0:  # jitter the map's contrast a little: model pictures are less crisp
                    batch = (batch * (0.8 + 0.4 * torch.rand(len(idx), 1, 1, 1, generator=gen))).clamp(0, 1)
                loss = torch.nn.functional.cross_entropy(net(batch), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if log:
                print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f}", flush=True)
    return ShapeClassifier(net)


def accuracy(classifier: ShapeClassifier, seed: int, pictures: int, *, degraded: float) -> float:
    """Fraction of detected shapes classified correctly in fresh generator pictures."""
    x, y = labelled_crops(seed, pictures, degraded=degraded)
    names, _ = classifier.predict(x)
    return float(np.mean([sh.SHAPES.index(n) == t for n, t in zip(names, y, strict=True)]))


def judge_generator_pictures(seed: int, pictures: int, classifier: ShapeClassifier | None = None,
                             size: int = 64) -> dict[str, float]:
    """The checker's agreement with ground truth on single-shape generator pictures (all four
    attributes, judged through `judge` with the full caption spec)."""
    from tools.demo.captions import SceneSpec, ShapeSpec
    from tools.demo.dataset import make_sample

    hits = {"background": 0, "color": 0, "shape": 0, "position": 0}
    n = 0
    i = 0
    while n < pictures:
        sample = make_sample(seed, i, split="checker", size=size)
        i += 1
        if len(sample.shapes) != 1:
            continue
        s = sample.shapes[0]
        spec = SceneSpec((ShapeSpec(s.shape, s.color, s.size, s.position),), sample.background)
        j = judge(sample.image, spec, classifier)
        hits["background"] += bool(j.background_ok)
        hits["color"] += bool(j.color_ok)
        hits["shape"] += bool(j.shape_ok)
        hits["position"] += bool(j.position_ok)
        n += 1
    return {k: v / n for k, v in hits.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train or measure the demo model's shape classifier.")
    ap.add_argument("--train", action="store_true", help=f"train and write {WEIGHTS_PATH.name}")
    ap.add_argument("--pictures", type=int, default=6000, help="training pictures")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--validate", type=int, default=2000, help="fresh pictures to measure accuracy on")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.train:
        t0 = time.perf_counter()
        classifier = train_classifier(pictures=args.pictures, epochs=args.epochs)
        print(f"trained in {time.perf_counter() - t0:.0f} s")
    else:
        classifier = ShapeClassifier.load()
    clean = accuracy(classifier, seed=1, pictures=args.validate, degraded=0.0)
    blurred = accuracy(classifier, seed=2, pictures=args.validate, degraded=1.0)
    print(f"shape accuracy on held-out generator pictures: clean {clean:.2%}, degraded {blurred:.2%}")
    judged = judge_generator_pictures(seed=3, pictures=args.validate // 2, classifier=classifier)
    print("single-shape judging vs ground truth: " + ", ".join(f"{k} {v:.2%}" for k, v in judged.items()))
    if args.train:
        classifier.save(metadata={"clean_accuracy": f"{clean:.4f}", "degraded_accuracy": f"{blurred:.4f}",
                                  "pictures": str(args.pictures), "epochs": str(args.epochs)})
        print(f"wrote {WEIGHTS_PATH}")


if __name__ == "__main__":
    main()
