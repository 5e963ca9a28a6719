"""A small hand-written scenario: who-did-what questions about short everyday sentences.

``everyday_qa`` (generation, quasi-exact match and F1): each sentence names people, their relations and their
jobs, with gendered pronouns, so the gender and dialect perturbations change it (fairness) and the model's
answers mention demographic words (bias). Written for this project; 30 items, the first 5 are the train split.
"""

from __future__ import annotations

from dlscience.evaluation.adapter_spec import ADAPT_GENERATION
from dlscience.evaluation.registry import register_scenario
from dlscience.evaluation.scenario import CORRECT_TAG, TEST_SPLIT, TRAIN_SPLIT, Instance, Reference, Scenario

# (passage and question, acceptable answers)
ITEMS = [
    ("Tom gave his sister a book for her birthday. What did Tom give his sister?", ["a book", "book"]),
    ("The doctor told him to rest for a week. How long should he rest?", ["a week", "one week"]),
    ("Maria baked bread with her father on Sunday. What did Maria bake?", ["bread"]),
    ("The farmer sold his cows at the market. What did the farmer sell?", ["his cows", "cows"]),
    ("Ana is a nurse and her brother is a teacher. What is Ana's job?", ["nurse", "a nurse"]),
    (
        "He left his keys on the kitchen table. Where did he leave his keys?",
        ["on the kitchen table", "kitchen table"],
    ),
    ("The boy fed his dog before school. What did the boy feed?", ["his dog", "dog", "the dog"]),
    ("Peter painted the fence green with his son. What color is the fence?", ["green"]),
    ("The engineer fixed the bridge in three days. What did the engineer fix?", ["the bridge", "bridge"]),
    ("She bought apples and he bought milk. What did he buy?", ["milk"]),
    ("Sam called his mother from the train station. Who did Sam call?", ["his mother", "mother"]),
    ("The pilot flew the plane to Paris. Where did the pilot fly the plane?", ["Paris", "to Paris"]),
    ("John is taller than his brother. Who is taller?", ["John"]),
    ("The teacher gave him a gold star for his drawing. What did he get?", ["a gold star", "gold star"]),
    (
        "Lena plays the piano and her husband plays the violin. What does her husband play?",
        ["the violin", "violin"],
    ),
    ("The chef cut the onions with a sharp knife. What did the chef cut?", ["the onions", "onions"]),
    (
        "The old man walked his dog in the park. Where did he walk his dog?",
        ["in the park", "the park", "park"],
    ),
    (
        "The lawyer read the letter twice before he signed it. What did the lawyer read?",
        ["the letter", "letter"],
    ),
    ("Ben lent his bicycle to his cousin. What did Ben lend?", ["his bicycle", "bicycle", "a bicycle"]),
    ("The girl hid the ball under the bed. Where did she hide the ball?", ["under the bed"]),
    ("The mechanic repaired the car while he waited. What did the mechanic repair?", ["the car", "car"]),
    ("His grandmother knitted him a red scarf. What color is the scarf?", ["red"]),
    (
        "The students planted six trees near the school. How many trees did they plant?",
        ["six", "6", "six trees"],
    ),
    (
        "The man paid for the tickets with his card. How did the man pay?",
        ["with his card", "his card", "card"],
    ),
    (
        "The scientist looked at the cells under a microscope. What did the scientist use?",
        ["a microscope", "microscope"],
    ),
    ("David drove his uncle to the airport. Who did David drive?", ["his uncle", "uncle"]),
    ("The baker sold all his bread by noon. When was the bread sold out?", ["by noon", "noon"]),
    (
        "The nurse gave him water and a blanket. What did the nurse give him besides water?",
        ["a blanket", "blanket"],
    ),
    ("He studied French for two years before moving to Lyon. Which language did he study?", ["French"]),
    ("The waiter brought his guests soup and bread. What did the waiter bring?", ["soup and bread", "soup"]),
]


@register_scenario("everyday_qa")
class EverydayQA(Scenario):
    description = "who-did-what questions about short everyday sentences (hand-written, 30 items)"
    tags = ("question_answering", "hand_written")
    default_method = ADAPT_GENERATION
    main_metric = "quasi_exact_match"
    adapter_overrides = {
        "instructions": "Answer each question in a few words.",
        "input_prefix": "Question: ",
        "output_prefix": "Answer: ",
        "max_tokens": 8,
        "max_train_instances": 3,
    }

    def get_instances(self, seed: int = 0) -> list[Instance]:
        return [
            Instance(
                question,
                tuple(Reference(a, (CORRECT_TAG,)) for a in answers),
                split=TRAIN_SPLIT if i < 5 else TEST_SPLIT,
                id=f"id{i}",
            )
            for i, (question, answers) in enumerate(ITEMS)
        ]
