"""Small in-test records in each layout (fresh copies per test), and a helper writing them to files."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

CF_EASYEDIT = {
    "case_id": 7,
    "prompt": "The mother tongue of Danielle Darrieux is",
    "target_new": "English",
    "subject": "Danielle Darrieux",
    "ground_truth": "French",
    "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
    "locality_prompt": "Michel Rocard is a native speaker of",
    "locality_ground_truth": "French",
}

CF_ROME = {
    "case_id": 18,
    "pararel_idx": 3603,
    "requested_rewrite": {
        "prompt": "{}, created by",
        "relation_id": "P176",
        "target_new": {"str": "Honda", "id": "Q9584"},
        "target_true": {"str": "Porsche", "id": "Q40993"},
        "subject": "Porsche 911",
    },
    "paraphrase_prompts": ["Some prefix. Porsche 911 is developed by", "Other prefix. Porsche 911, developed by"],
    "neighborhood_prompts": ["Porsche RS Spyder is produced by", "Porsche 550, developed by"],
    "attribute_prompts": ["Honda Aviator is produced by"],
    "generation_prompts": ["Porsche 911 is sold by", "The production of Porsche 911 is overseen by"],
}

ZSRE_MEND = {
    "subject": "UniFirst",
    "src": "What is the product made by UniFirst?",
    "pred": "uniform",
    "rephrase": "What will be the product of UniFirst?",
    "alt": " unmanned aircraft",
    "answers": ["uniform", "uniforms"],
    "loc": "nq question: john goodman's character in the big lebowski",
    "loc_ans": "Walter Sobchak",
    "cond": "uniform >> unmanned aircraft || What is the product made by UniFirst?",
    "portability": {
        "Recalled Relation": "(UniFirst, industry, textiles)",
        "New Question": "Which aircraft does UniFirst make?",
        "New Answer": "drones",
    },
}

KNOWEDIT = {
    "subject": "Epaspidoceras",
    "target_new": "Noctuidae",
    "prompt": "Which family does Epaspidoceras belong to?",
    "ground_truth": ["Aspidoceratidae"],
    "rephrase_prompt": "What family are Epaspidoceras?",
    "cond": "Geometridae >> Noctuidae || Which family does Epaspidoceras belong to?",
    "locality": {
        "Relation_Specificity": [
            {"prompt": "The taxon rank of Epaspidoceras is", "ground_truth": ["genus"]},
            {"prompt": "Epaspidoceras taxon rank", "ground_truth": ["genus", "Genus"]},
        ]
    },
    "portability": {
        "Reasoning": [{"prompt": "What is the common name for the family Epaspidoceras belongs to?",
                       "ground_truth": "Owlet moths"}]
    },
}

MQUAKE = {
    "case_id": 7417,
    "requested_rewrite": [
        {"prompt": "{} was performed by", "relation_id": "P175", "target_new": {"str": "Madonna", "id": "Q1744"},
         "target_true": {"str": "The Beatles", "id": "Q1299"}, "subject": "Hey Jude",
         "question": "Who performed Hey Jude?"},
        {"prompt": "The official language of {} is", "relation_id": "P37", "target_new": {"str": "Arabic", "id": "Q1"},
         "target_true": {"str": "English", "id": "Q2"}, "subject": "Australia",
         "question": "What is the official language of Australia?"},
    ],
    "questions": ["What language does Hey Jude's performer speak?", "Which language is spoken by the performer of Hey Jude?"],
    "answer": "English",
    "answer_alias": ["en"],
    "new_answer": "Arabic",
    "new_answer_alias": ["ar", "Arabic language", "ar"],
    "single_hops": [{"question": "Who performed Hey Jude?", "cloze": "Hey Jude was performed by",
                     "answer": "The Beatles", "answer_alias": []}],
    "new_single_hops": [{"question": "Who performed Hey Jude?", "cloze": "Hey Jude was performed by",
                         "answer": "Madonna", "answer_alias": []}],
}


@pytest.fixture
def cf_easyedit() -> dict:
    return copy.deepcopy(CF_EASYEDIT)


@pytest.fixture
def cf_rome() -> dict:
    return copy.deepcopy(CF_ROME)


@pytest.fixture
def zsre_mend() -> dict:
    return copy.deepcopy(ZSRE_MEND)


@pytest.fixture
def knowedit() -> dict:
    return copy.deepcopy(KNOWEDIT)


@pytest.fixture
def mquake_record() -> dict:
    return copy.deepcopy(MQUAKE)


@pytest.fixture
def write_json(tmp_path: Path):
    """write_json(name, records) -> Path; gzips when the name ends in .gz."""

    def write(name: str, records) -> Path:
        path = tmp_path / name
        text = json.dumps(records)
        if name.endswith(".gz"):
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    return write
