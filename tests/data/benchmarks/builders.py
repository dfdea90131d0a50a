"""Write tiny benchmark folders in each official layout (file names, folders and fields as downloaded)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from PIL import Image

COLORS = ((200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40))
IMAGE_SIZE = (6, 4)


def write_image(path: Path, index: int = 0) -> Path:
    """A small solid-colour image; the format follows the suffix (.jpg / .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", IMAGE_SIZE, COLORS[index % len(COLORS)]).save(path)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


# ---------------------------------------------------------------- POPE
POPE_QUESTIONS = {  # category -> [(image number, object, label)]
    "adversarial": [(1, "dog", "yes"), (1, "cat", "no"), (2, "car", "yes"), (2, "bus", "no")],
    "popular": [(1, "dog", "yes"), (3, "person", "no")],
    "random": [(2, "car", "yes"), (3, "kite", "no")],
}


def pope_image(number: int) -> str:
    return f"COCO_val2014_{number:012d}.jpg"


def build_pope(root: Path) -> Path:
    """pope/: llava_pope_test.jsonl, coco/coco_pope_<category>.json, val2014/."""
    for number in (1, 2, 3):
        write_image(root / "val2014" / pope_image(number), number)
    questions, question_id = [], 0
    for category, rows in POPE_QUESTIONS.items():
        labels = []
        for position, (number, obj, label) in enumerate(rows, start=1):
            question_id += 1
            text = f"Is there a {obj} in the image?"
            # POPE's own files number questions from 1 in each category; LLaVA's file numbers them globally.
            labels.append(
                {"question_id": position, "image": pope_image(number), "text": text, "label": label}
            )
            questions.append(
                {"question_id": question_id, "image": pope_image(number), "text": text, "category": category}
            )
        write_jsonl(root / "coco" / f"coco_pope_{category}.json", labels)
    # One prompt already carries LLaVA's instruction, as eval files sometimes do: it must not be doubled.
    questions[0]["text"] += "\nAnswer the question using a single word or phrase."
    write_jsonl(root / "llava_pope_test.jsonl", questions)
    return root


# ---------------------------------------------------------------- MME
MME_FOLDERED = ("artwork", "celebrity", "landmark", "posters", "scene")  # images/ + questions_answers_YN/
MME_SUBTASKS = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
    "commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning",
)  # fmt: skip


def mme_questions(subtask: str, image: str) -> list[tuple[str, str]]:
    """The two (question, Yes|No) lines MME writes for one image."""
    return [
        (f"Is this {subtask} picture {image} red? Please answer yes or no.", "Yes"),
        (f"Is this {subtask} picture {image} blue? Please answer yes or no.", "No"),
    ]


def build_mme(root: Path, with_llava_questions: bool = True) -> Path:
    """MME/: MME_Benchmark_release_version/<subtask>/..., plus LLaVA's llava_mme.jsonl."""
    release = root / "MME_Benchmark_release_version"
    records = []
    for number, subtask in enumerate(MME_SUBTASKS):
        names = ["0001", "0002"] if subtask == "existence" else ["0001"]
        suffix = ".jpg" if subtask in MME_FOLDERED else ".png"
        for name in names:
            if subtask in MME_FOLDERED:
                image, txt = (
                    release / subtask / "images" / f"{name}{suffix}",
                    release / subtask / "questions_answers_YN",
                )
            else:
                image, txt = release / subtask / f"{name}{suffix}", release / subtask
            write_image(image, number)
            lines = mme_questions(subtask, name)
            txt.mkdir(parents=True, exist_ok=True)
            (txt / f"{name}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in lines), encoding="utf-8")
            for question, _ in lines:
                bare = question.replace(" Please answer yes or no.", "")
                records.append(
                    {
                        "question_id": f"{subtask}/{name}{suffix}",
                        "image": f"{subtask}/{name}{suffix}",
                        "text": f"{bare}\nAnswer the question using a single word or phrase.",
                        "category": subtask,
                    }
                )
    if with_llava_questions:
        write_jsonl(root / "llava_mme.jsonl", records)
    return root


# ---------------------------------------------------------------- MMBench
MMBENCH_COLUMNS = (
    "index", "question", "hint", "A", "B", "C", "D", "answer",
    "category", "image", "source", "l2-category", "comment", "split",
)  # fmt: skip
ATTRIBUTE = ("attribute_recognition", "finegrained_perception (instance-level)")
QUALITY = ("image_quality", "coarse_perception")
SPATIAL = ("spatial_relationship", "finegrained_perception (cross-instance)")
MMBENCH_QUESTIONS = (  # index, question, hint, options, answer, (category, l2-category), fixed last option
    (0, "What is the main colour?", "The picture was taken indoors.", ["red", "green", "purple", "yellow"], "C",
     ATTRIBUTE, False),
    (1, "How many objects are there?", "", ["one", "two", "three"], "B", ATTRIBUTE, False),
    (2, "Is the image bright?", "nan", ["yes", "no"], "A", QUALITY, False),
    (3, "Which animal is left of the tree?", "", ["cat", "dog", "bird", "None of the above"], "B", SPATIAL, True),
    (4, "Which shape is red?", "", ["circle", "square", "triangle", "star"], "A", ATTRIBUTE, False),
    (5, "Where is the circle?", "", ["left", "right", "top", "bottom"], "C", SPATIAL, False),
)  # fmt: skip


def mmbench_rows(with_copies: bool = True) -> list[tuple[int, str, str, list[str], str, tuple[str, str]]]:
    """The TSV's rows as MMBench releases them: every question, then its circular copies (index + k * 1e6).

    Copy k shows the options shifted left by k, with the answer letter moved along; a question whose
    last option is fixed ("None of the above") rotates only the others, so it has one copy fewer.
    """
    rows = [(i, q, hint, options, answer, cat) for i, q, hint, options, answer, cat, _ in MMBENCH_QUESTIONS]
    if not with_copies:
        return rows
    for k in (1, 2, 3):
        for index, question, hint, options, answer, category, fixed in MMBENCH_QUESTIONS:
            moving = options[:-1] if fixed else options
            if k >= len(moving):
                continue
            shown = moving[k:] + moving[:k] + (options[-1:] if fixed else [])
            letter = "ABCD"[shown.index(options["ABCD".index(answer)])]
            rows.append((index + k * 1_000_000, question, hint, shown, letter, category))
    return rows


def png_base64(index: int = 0) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, COLORS[index % len(COLORS)]).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_mmbench(root: Path, with_copies: bool = True) -> Path:
    """mmbench/: mmbench_dev_20230712.tsv with base64 images and (by default) the released copy rows."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "mmbench_dev_20230712.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(MMBENCH_COLUMNS)
        for index, question, hint, options, answer, (category, l2) in mmbench_rows(with_copies):
            padded = [*options, "", "", "", ""][:4]
            image = png_base64(index % 1_000_000)
            writer.writerow([index, question, hint, *padded, answer, category, image, "synthetic", l2, "", "dev"])
    return root


# ---------------------------------------------------------------- ScienceQA
SQA_PROBLEMS = {  # id -> (choices, answer index, has image)
    "1": (["cat", "dog"], 0, True),
    "2": (["yes", "no"], 1, False),
    "3": (["Asia", "Europe", "Africa", "Oceania", "Antarctica"], 4, True),
    "4": (["rough", "smooth", "sticky"], 0, True),
}


def build_scienceqa(root: Path) -> Path:
    """scienceqa/: llava_test_CQM-A.json, problems.json, pid_splits.json, images/test/<id>/image.png."""
    problems, entries = {}, []
    for problem_id, (choices, answer, has_image) in SQA_PROBLEMS.items():
        problems[problem_id] = {
            "question": f"Question {problem_id}?", "choices": choices, "answer": answer,
            "hint": "A hint." if problem_id == "1" else "", "image": "image.png" if has_image else None,
            "task": "closed choice", "grade": "grade3", "subject": "natural science", "topic": "biology",
            "category": "Classification", "skill": "Identify", "lecture": "", "solution": "", "split": "test",
        }  # fmt: skip
        options = "\n".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(choices))
        value = f"Context: {problems[problem_id]['hint'] or 'N/A'}\nQuestion {problem_id}?\n{options}"
        entry = {
            "id": problem_id,
            "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "A"}],
        }
        if has_image:
            entry["image"] = f"{problem_id}/image.png"
            entry["conversations"][0]["value"] = "<image>\n" + value
            write_image(root / "images" / "test" / problem_id / "image.png", int(problem_id))
        entries.append(entry)
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", {"train": [], "val": [], "test": list(SQA_PROBLEMS)})
    write_json(root / "llava_test_CQM-A.json", entries)
    return root


# ---------------------------------------------------------------- SEED-Bench
SEED_TYPES = {
    "Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
    "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
    "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11, "Procedure Understanding": 12,
}  # fmt: skip
SEED_CHOICES = {"101670": ["Two", "Three", "Four", "Five"]}
SEED_QUESTIONS = (  # question_id, data_id, type id, answer
    ("101669", "1454426_2591111986", 5, "A"),
    ("101670", "1454426_2591111987", 5, "C"),
    ("1", "9867_1131474591", 1, "D"),
    ("v1738", "94328.webm", 10, "B"),
)


def build_seed(root: Path, with_llava_questions: bool = True) -> Path:
    """seed_bench/: SEED-Bench.json, llava-seed-bench.jsonl, SEED-Bench-image/<data_id>.jpg."""
    questions, records = [], []
    for number, (question_id, data_id, type_id, answer) in enumerate(SEED_QUESTIONS):
        is_image = type_id <= 9
        choices = SEED_CHOICES.get(question_id, [f"choice {letter} of {question_id}" for letter in "abcd"])
        questions.append(
            {
                "answer": answer, "choice_a": choices[0], "choice_b": choices[1], "choice_c": choices[2],
                "choice_d": choices[3], "data_id": data_id, "data_type": "image" if is_image else "video",
                "question": f"What about {question_id}?", "question_id": question_id, "question_type_id": type_id,
            }
        )  # fmt: skip
        if is_image:
            image = f"SEED-Bench-image/{data_id}.jpg"
            write_image(root / image, number)
        else:
            image = f"SEED-Bench-video-image/{data_id.split('.')[0]}.png"
        options = "\n".join(f"{letter}. {c}" for letter, c in zip("ABCD", choices, strict=True))
        text = f"What about {question_id}?\n{options}\nAnswer with the option's letter from the given choices directly."
        # convert_seed_for_submission.py looks answers up by int(question_id) (str when that fails), so
        # LLaVA's file carries numeric ids as JSON integers.
        file_id = int(question_id) if question_id.isdigit() else question_id
        records.append({"image": image, "text": text, "category": "x", "question_id": file_id})
    write_json(root / "SEED-Bench.json", {"questions": questions, "question_type": SEED_TYPES})
    if with_llava_questions:
        write_jsonl(root / "llava-seed-bench.jsonl", records)
    return root


# ---------------------------------------------------------------- A-OKVQA
AOKVQA_QUESTIONS = (  # question_id, image_id, choices, correct, direct answers, difficult
    ("22MexNkBPpdZGX6sxbxVBH", 299207, ["skateboarder", "train", "delivery", "cab"], 3,
     ["cab"] * 6 + ["taxi"] * 3 + ["bus"], False),
    ("2Bg3YkQyzGQeNhtjGNfq4C", 461751, ["rain", "sun", "umbrella", "snow"], 2,
     ["umbrella"] * 10, True),
    ("3Yx1dFcX7W7w6Q5m4Zb8Vh", 123, ["red", "blue", "green", "white"], 1,
     ["blue"] * 8 + ["navy", "dark blue"], False),
)  # fmt: skip


def build_aokvqa(datasets: Path) -> Path:
    """allenai/aokvqa's README layout: datasets/aokvqa/aokvqa_v1p0_val.json beside datasets/coco/val2017/.

    Returns AOKVQA_DIR (datasets/aokvqa), the folder eval_predictions.py's --aokvqa-dir names.
    """
    aokvqa_dir, coco_dir = datasets / "aokvqa", datasets / "coco"
    data = []
    for number, (question_id, image_id, choices, correct, direct, difficult) in enumerate(AOKVQA_QUESTIONS):
        write_image(coco_dir / "val2017" / f"{image_id:012d}.jpg", number)
        data.append(
            {
                "split": "val", "image_id": image_id, "question_id": question_id,
                "question": f"What is in picture {number}?", "choices": choices, "correct_choice_idx": correct,
                "direct_answers": direct, "difficult_direct_answer": difficult,
                "rationales": ["Because it is."] * 3,
            }
        )  # fmt: skip
    write_json(aokvqa_dir / "aokvqa_v1p0_val.json", data)
    return aokvqa_dir


# ---------------------------------------------------------------- easy-VQA
EASY_VQA_ANSWERS = ("circle", "green", "red", "gray", "yes", "teal", "black", "rectangle", "yellow", "triangle",
                    "brown", "blue", "no")  # answers.txt as released
EASY_VQA_QUESTIONS = [["what is the red shape?", "triangle", 0], ["what is the color of the triangle?", "red", 0],
                      ["does the image contain a circle?", "no", 0], ["is there a blue shape?", "yes", 1],
                      ["what color is the shape?", "blue", 1]]  # the released entries' form


def build_easy_vqa(root: Path, questions: list | None = None) -> Path:
    """easy-vqa's `data` folder: answers.txt, test/questions.json, test/images/<id>.png."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "answers.txt").write_text("".join(a + "\n" for a in EASY_VQA_ANSWERS))
    write_json(root / "test" / "questions.json", EASY_VQA_QUESTIONS if questions is None else questions)
    for image_id in (0, 1):
        write_image(root / "test" / "images" / f"{image_id}.png", image_id)
    return root
