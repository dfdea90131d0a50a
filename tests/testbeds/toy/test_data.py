"""The synthetic shapes task: deterministic, balanced, answerable only from the image."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from shortlvlm.testbeds.toy.data import (
    CELL,
    COLORS,
    FAMILIES,
    GENERATORS,
    IMAGE_SIZE,
    answer_question,
    make_sample,
    make_split,
    relation_holds,
    render,
    vocabulary,
)


def test_samples_are_deterministic_and_splits_differ():
    a, b = make_sample("train", 7), make_sample("train", 7)
    assert (a.question, a.answer, a.scene.objects) == (b.question, b.answer, b.scene.objects)
    assert list(a.image().getdata()) == list(b.image().getdata())
    train = {(s.question, tuple(sorted(s.scene.objects.items()))) for s in make_split("train", 300)}
    test = {(s.question, tuple(sorted(s.scene.objects.items()))) for s in make_split("test", 300)}
    assert not train & test


@pytest.mark.parametrize("family", FAMILIES)
def test_planned_answer_is_the_answer_recomputed_from_the_scene(family):
    for index in range(60):
        scene, meta, planned = GENERATORS[family](random.Random(index), index)
        if family != "choice":  # choice plans the letter through the option order
            assert answer_question(scene, meta) == planned, meta


def test_answers_are_balanced_within_each_family():
    samples = make_split("test", 1800)
    for family in FAMILIES:
        counts = Counter(s.answer for s in samples if s.family == family)
        assert max(counts.values()) / sum(counts.values()) < 0.6 if family in ("exists", "spatial") else \
            max(counts.values()) / sum(counts.values()) < 0.35, (family, counts)


def test_every_object_is_drawn_inside_its_own_cell():
    sample = make_sample("test", 3)
    image = render(sample.scene)
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    for (row, col), obj in sample.scene.objects.items():
        cell = image.crop((col * CELL, row * CELL, (col + 1) * CELL, (row + 1) * CELL))
        assert COLORS[obj.color] in {rgb for _, rgb in cell.getcolors()}


def test_relations_are_strict():
    assert relation_holds((0, 0), (0, 1), "left of") and not relation_holds((0, 1), (0, 1), "left of")
    assert relation_holds((2, 0), (1, 3), "below") and not relation_holds((1, 0), (1, 3), "above")


def test_vocabulary_covers_every_question_and_answer():
    words = set(vocabulary())
    for sample in make_split("train", 1200):
        assert set(sample.question.split()) | {sample.answer} <= words
