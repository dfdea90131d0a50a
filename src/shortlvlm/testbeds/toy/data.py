"""Synthetic visual QA ("shapes"): scenes of coloured shapes on a 4x4 grid, and questions about them.

Every image is 48x48 with one object at most per 12x12 cell, aligned with the toy model's
12-pixel patches, so each image token carries one cell. Scenes are generated to make a planned
answer true (balanced answers keep text-only priors near chance), and the ground truth is then
recomputed from the scene by `answer_question`, independently of the plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

GRID = 4
CELL = 12
IMAGE_SIZE = GRID * CELL
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (230, 210, 40), "purple": (150, 60, 200), "orange": (240, 140, 30),
}
# Non-uniform colour frequencies make POPE's "popular" negatives meaningful.
COLOR_WEIGHTS = {"red": 0.26, "blue": 0.2, "green": 0.17, "yellow": 0.15, "purple": 0.12, "orange": 0.10}
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
NEIGHBOURS = {"right of": (0, 1), "left of": (0, -1), "above": (-1, 0), "below": (1, 0)}
FAMILIES = ("exists", "attribute", "count", "spatial", "compositional", "choice")
POPE_STRATEGIES = ("random", "popular", "adversarial")
LETTERS = ("A", "B", "C", "D")
NUMBERS = ("zero", "one", "two", "three", "four")
MC_SUFFIX = "answer with the option's letter from the given choices directly ."
SPLIT_SEEDS = {"train": 0, "calibration": 10_000_000, "test": 20_000_000}
BACKGROUND = (24, 24, 24)


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class Scene:
    """Objects by cell (row, col); `jitter` shifts each drawing by a pixel or two."""

    objects: dict[tuple[int, int], Obj] = field(default_factory=dict)
    jitter: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)

    def cells_where(self, **attrs) -> list[tuple[int, int]]:
        return [c for c, o in self.objects.items() if all(getattr(o, k) == v for k, v in attrs.items())]

    def free_cells(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in self.objects]


@dataclass
class ToySample:
    """One question about one scene."""

    id: str
    family: str
    question: str
    answer: str
    scene: Scene
    meta: dict = field(default_factory=dict)

    def image(self) -> Image.Image:
        return render(self.scene)


def render(scene: Scene) -> Image.Image:
    """Draw a scene (no anti-aliasing, so shapes stay crisp at 12 pixels)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for (row, col), obj in scene.objects.items():
        dy, dx = scene.jitter.get((row, col), (0, 0))
        half = 5 if obj.size == "large" else 3
        cx, cy = col * CELL + CELL // 2 + dx, row * CELL + CELL // 2 + dy
        box = (cx - half, cy - half, cx + half - 1, cy + half - 1)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
        else:  # cross
            arm = max(1, half // 2)
            draw.rectangle((box[0], cy - arm, box[2], cy + arm - 1), fill=fill)
            draw.rectangle((cx - arm, box[1], cx + arm - 1, box[3]), fill=fill)
    return image


# --- ground truth ----------------------------------------------------------------------------


def relation_holds(a: tuple[int, int], b: tuple[int, int], relation: str) -> bool:
    """Whether the object in cell a is <relation> the object in cell b (strictly, by row/column)."""
    return {
        "left of": a[1] < b[1], "right of": a[1] > b[1], "above": a[0] < b[0], "below": a[0] > b[0]
    }[relation]


def answer_question(scene: Scene, meta: dict) -> str:
    """The correct answer, recomputed from the scene and the question's structured form."""
    kind = meta["kind"]
    if kind == "exists":
        return "yes" if scene.cells_where(color=meta["color"], shape=meta["shape"]) else "no"
    if kind == "color_of_shape":
        (cell,) = scene.cells_where(shape=meta["shape"])
        return scene.objects[cell].color
    if kind == "shape_of_color":
        (cell,) = scene.cells_where(color=meta["color"])
        return scene.objects[cell].shape
    if kind == "count_shape":
        return NUMBERS[len(scene.cells_where(shape=meta["shape"]))]
    if kind == "count_color":
        return NUMBERS[len(scene.cells_where(color=meta["color"]))]
    if kind == "spatial":
        (a,) = scene.cells_where(color=meta["color"], shape=meta["shape"])
        (b,) = scene.cells_where(color=meta["ref_color"], shape=meta["ref_shape"])
        return "yes" if relation_holds(a, b, meta["relation"]) else "no"
    if kind == "neighbour":
        (ref,) = scene.cells_where(color=meta["ref_color"], shape=meta["ref_shape"])
        dr, dc = NEIGHBOURS[meta["relation"]]
        return getattr(scene.objects[(ref[0] + dr, ref[1] + dc)], meta["attribute"])
    if kind == "choice":
        (cell,) = scene.cells_where(color=meta["color"])
        return LETTERS[meta["options"].index(scene.objects[cell].shape)]
    raise ValueError(f"unknown question kind {kind!r}")


# --- generation ------------------------------------------------------------------------------


def _up_to(rng: random.Random, low: int, high: int, cap: int) -> int:
    """A count in [low, high], both capped at `cap` (the curriculum's crowding limit)."""
    return rng.randint(min(low, cap), min(high, cap))


def _random_obj(rng: random.Random, shape: str | None = None, color: str | None = None) -> Obj:
    color = color or rng.choices(list(COLOR_WEIGHTS), weights=list(COLOR_WEIGHTS.values()))[0]
    return Obj(shape or rng.choice(SHAPES), color, rng.choice(SIZES))


def _fill(scene: Scene, rng: random.Random, count: int, forbid=lambda obj: False) -> None:
    """Add up to `count` random distractors that do not satisfy `forbid` (count may be 0)."""
    for cell in rng.sample(scene.free_cells(), min(count, len(scene.free_cells()))):
        for _ in range(20):
            obj = _random_obj(rng)
            if not forbid(obj):
                scene.objects[cell] = obj
                break


def _unique(scene: Scene, cell: tuple[int, int]) -> bool:
    obj = scene.objects[cell]
    return len(scene.cells_where(color=obj.color, shape=obj.shape)) == 1


def _exists(rng: random.Random, index: int, crowd: int = 6) -> tuple[Scene, dict, str]:
    scene = Scene()
    _fill(scene, rng, _up_to(rng, 3, 7, crowd + 1))
    strategy = POPE_STRATEGIES[index % 3]
    if rng.random() < 0.5:
        target = rng.choice(list(scene.objects.values()))
        return scene, {"kind": "exists", "color": target.color, "shape": target.shape, "pope": strategy}, "yes"
    present = {(o.color, o.shape) for o in scene.objects.values()}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    if strategy == "popular":  # the most frequent absent objects
        absent.sort(key=lambda cs: -COLOR_WEIGHTS[cs[0]])
        absent = absent[:4]
    elif strategy == "adversarial":  # absent, but sharing colour or shape with something present
        close = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        absent = close or absent
    color, shape = rng.choice(absent)
    return scene, {"kind": "exists", "color": color, "shape": shape, "pope": strategy}, "no"


def _attribute(rng: random.Random, index: int, crowd: int = 6) -> tuple[Scene, dict, str]:
    scene = Scene()
    target = _random_obj(rng, shape=rng.choice(SHAPES), color=rng.choice(list(COLORS)))
    scene.objects[(rng.randrange(GRID), rng.randrange(GRID))] = target
    if index % 2 == 0:
        _fill(scene, rng, _up_to(rng, 2, 6, crowd), forbid=lambda o: o.shape == target.shape)
        return scene, {"kind": "color_of_shape", "shape": target.shape}, target.color
    _fill(scene, rng, _up_to(rng, 2, 6, crowd), forbid=lambda o: o.color == target.color)
    return scene, {"kind": "shape_of_color", "color": target.color}, target.shape


def _count(rng: random.Random, index: int, crowd: int = 6) -> tuple[Scene, dict, str]:
    scene = Scene()
    n = rng.randrange(len(NUMBERS))
    by_shape = index % 2 == 0
    key = rng.choice(SHAPES) if by_shape else rng.choice(list(COLORS))
    for cell in rng.sample(scene.free_cells(), n):
        scene.objects[cell] = _random_obj(rng, shape=key) if by_shape else _random_obj(rng, color=key)
    forbid = (lambda o: o.shape == key) if by_shape else (lambda o: o.color == key)
    _fill(scene, rng, _up_to(rng, 1, 5, crowd), forbid=forbid)
    meta = {"kind": "count_shape", "shape": key} if by_shape else {"kind": "count_color", "color": key}
    return scene, meta, NUMBERS[n]


def _two_unique(rng: random.Random, scene: Scene, a: tuple[int, int], b: tuple[int, int], crowd: int) -> None:
    """Place two distinct, uniquely described objects in cells a and b, then distractors."""
    uniform = lambda: _random_obj(rng, color=rng.choice(list(COLORS)))  # noqa: E731 - balanced answers
    first, second = uniform(), uniform()
    while (second.color, second.shape) == (first.color, first.shape):
        second = uniform()
    scene.objects[a], scene.objects[b] = first, second
    names = {(first.color, first.shape), (second.color, second.shape)}
    _fill(scene, rng, _up_to(rng, 1, 5, crowd), forbid=lambda o: (o.color, o.shape) in names)


def _spatial(rng: random.Random, index: int, crowd: int = 6) -> tuple[Scene, dict, str]:
    relation = RELATIONS[index % 4]
    want = rng.random() < 0.5
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    while True:
        a, b = rng.sample(cells, 2)
        if relation_holds(a, b, relation) == want:
            break
    scene = Scene()
    _two_unique(rng, scene, a, b, crowd)
    first, second = scene.objects[a], scene.objects[b]
    meta = {"kind": "spatial", "color": first.color, "shape": first.shape, "relation": relation,
            "ref_color": second.color, "ref_shape": second.shape}
    return scene, meta, "yes" if want else "no"


def _compositional(rng: random.Random, index: int, crowd: int = 6) -> tuple[Scene, dict, str]:
    relation = RELATIONS[(index // 2) % 4]
    dr, dc = NEIGHBOURS[relation]
    while True:
        ref = (rng.randrange(GRID), rng.randrange(GRID))
        other = (ref[0] + dr, ref[1] + dc)
        if 0 <= other[0] < GRID and 0 <= other[1] < GRID:
            break
    scene = Scene()
    _two_unique(rng, scene, ref, other, crowd)
    attribute = "color" if index % 2 == 0 else "shape"
    anchor = scene.objects[ref]
    meta = {"kind": "neighbour", "relation": relation, "attribute": attribute,
            "ref_color": anchor.color, "ref_shape": anchor.shape}
    return scene, meta, getattr(scene.objects[other], attribute)


def _choice(rng: random.Random, index: int, crowd: int = 6) -> tuple[Scene, dict, str]:
    scene, meta, _ = _attribute(rng, 1, crowd)  # exactly one object of the asked colour
    options = list(SHAPES)
    rng.shuffle(options)
    meta = {"kind": "choice", "color": meta["color"], "options": options}
    return scene, meta, ""


GENERATORS = {
    "exists": _exists, "attribute": _attribute, "count": _count,
    "spatial": _spatial, "compositional": _compositional, "choice": _choice,
}


def question_text(meta: dict) -> str:
    """The question in words (lower case, punctuation as separate tokens)."""
    kind = meta["kind"]
    if kind == "exists":
        return f"is there a {meta['color']} {meta['shape']} in the image ?"
    if kind == "color_of_shape":
        return f"what color is the {meta['shape']} ?"
    if kind == "shape_of_color":
        return f"what shape is the {meta['color']} object ?"
    if kind == "count_shape":
        return f"how many {PLURALS[meta['shape']]} are there ?"
    if kind == "count_color":
        return f"how many {meta['color']} objects are there ?"
    if kind == "spatial":
        return (f"is the {meta['color']} {meta['shape']} {meta['relation']} the "
                f"{meta['ref_color']} {meta['ref_shape']} ?")
    if kind == "neighbour":
        return (f"what {meta['attribute']} is the object directly {meta['relation']} the "
                f"{meta['ref_color']} {meta['ref_shape']} ?")
    if kind == "choice":
        options = " ".join(f"{letter} . {shape}" for letter, shape in zip(LETTERS, meta["options"], strict=True))
        return f"which shape is {meta['color']} ? {options} {MC_SUFFIX}"
    raise ValueError(f"unknown question kind {kind!r}")


def content_class(obj: Obj) -> int:
    """1 + shape * len(COLORS) + colour: the class of a cell holding `obj` (0 is an empty cell)."""
    return 1 + SHAPES.index(obj.shape) * len(COLORS) + list(COLORS).index(obj.color)


def mentions(sample: ToySample) -> list[tuple[int, int, int]]:
    """(question word index, content class, cell) for each object the question names.

    The content class is 0 if no such object is in the image, else that of the (first) matching
    object; the cell is its row-major index, or GRID*GRID if absent: what attending from the word
    to that object retrieves.

    The word is the last word of the mention (the shape, or the colour when only a colour is
    named); counting questions name a kind, not one object, and have none.
    """
    meta, words = sample.meta, sample.question.split()
    named = []
    if meta["kind"] in ("exists", "spatial"):
        named.append((meta["color"], meta["shape"]))
    if meta["kind"] in ("spatial", "neighbour"):
        named.append((meta["ref_color"], meta["ref_shape"]))
    if meta["kind"] == "color_of_shape":
        named.append((None, meta["shape"]))
    if meta["kind"] in ("shape_of_color", "choice"):
        named.append((meta["color"], None))
    result, start = [], 0
    for color, shape in named:
        attrs = {k: v for k, v in (("color", color), ("shape", shape)) if v is not None}
        word = shape or color
        position = words.index(word, start) if color is None or shape is None else next(
            i for i in range(start + 1, len(words)) if words[i] == shape and words[i - 1] == color)
        start = position + 1
        cells = sample.scene.cells_where(**attrs)
        if cells:
            content, cell = content_class(sample.scene.objects[cells[0]]), cells[0][0] * GRID + cells[0][1]
        else:
            content, cell = 0, GRID * GRID
        result.append((position, content, cell))
    return result


def make_sample(split: str, index: int, family: str | None = None, crowd: int = 6) -> ToySample:
    """Sample `index` of a split; deterministic, and splits use disjoint seeds.

    `crowd` caps the number of distractor objects (6 = full difficulty; training starts lower).
    """
    rng = random.Random(SPLIT_SEEDS[split] + index)
    family = family or FAMILIES[index % len(FAMILIES)]
    scene, meta, _ = GENERATORS[family](rng, index // len(FAMILIES), crowd)
    scene.jitter = {cell: (rng.randint(-1, 1), rng.randint(-1, 1)) for cell in scene.objects}
    return ToySample(
        id=f"{split}-{index}", family=family, question=question_text(meta),
        answer=answer_question(scene, meta), scene=scene, meta=meta,
    )


def make_split(split: str, size: int, start: int = 0, crowd: int = 6) -> list[ToySample]:
    """`size` consecutive samples of a split (families interleaved, so any prefix is balanced)."""
    return [make_sample(split, i, crowd=crowd) for i in range(start, start + size)]


def vocabulary() -> list[str]:
    """Every word questions and answers can contain (the tokenizer's vocabulary, specials excluded)."""
    words = set(MC_SUFFIX.split()) | set(LETTERS) | set(NUMBERS) | set(SHAPES) | set(PLURALS.values())
    words |= set(COLORS) | {"yes", "no", "?", "."}
    for relation in RELATIONS:
        words |= set(relation.split())
    templates = [
        "is there a in the image", "what color is the", "what shape is the object",
        "how many are there objects", "is the", "what is the object directly", "which shape is",
    ]
    for template in templates:
        words |= set(template.split())
    return sorted(words)
