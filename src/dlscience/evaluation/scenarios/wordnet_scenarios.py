"""Offline scenarios built from WordNet 3.0 (Debian ``wordnet-base``): real lexical knowledge that needs no
download.

``wordnet_definition``
    Definition -> word (generation, quasi-exact match against any of the synset's words): the first sense of
    frequent concrete nouns (animals, artifacts, body parts, foods, objects, plants; sense counts from SemCor's
    ``cntlist.rev``).
``wordnet_synonym``
    Which word means the same as X? (multiple choice joint, 4 choices): another word of X's synset against
    three words of other frequent synsets of the same part of speech; sub-splits are the parts of speech.
``wordnet_hypernym``
    X is a kind of ...? (multiple choice separate, 4 choices scored by mean token log probability): the
    direct hypernym against three frequent nouns outside X's hypernym chain.
``wordnet_gloss_lm``
    Language modelling of glosses (bits per byte).

Each keeps ``n_train`` instances as the train split (in-context examples) and the rest as test; the choice of
words and distractors is fixed by ``seed``.
"""

from __future__ import annotations

import random

from dlscience.evaluation.adapter_spec import (
    ADAPT_GENERATION,
    ADAPT_LANGUAGE_MODELING,
    ADAPT_MULTIPLE_CHOICE_JOINT,
    ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL,
)
from dlscience.evaluation.registry import register_scenario
from dlscience.evaluation.scenario import CORRECT_TAG, TEST_SPLIT, TRAIN_SPLIT, Instance, Reference, Scenario
from dlscience.evaluation.wordnet import frequent_senses, load_synsets

CONCRETE_LEXNAMES = {5: "animal", 6: "artifact", 8: "body", 13: "food", 17: "object", 20: "plant"}
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective"}


def _split(instances: list[Instance], n_train: int, rng: random.Random) -> list[Instance]:
    rng.shuffle(instances)
    out = []
    for i, inst in enumerate(instances):
        out.append(
            Instance(
                inst.input,
                inst.references,
                TRAIN_SPLIT if i < n_train else TEST_SPLIT,
                inst.sub_split,
                f"id{i}",
            )
        )
    return out


def _choices(correct: str, distractors: list[str], rng: random.Random) -> tuple[Reference, ...]:
    options = [(correct, True)] + [(d, False) for d in distractors]
    rng.shuffle(options)
    return tuple(Reference(text, (CORRECT_TAG,) if ok else ()) for text, ok in options)


class _WordNetScenario(Scenario):
    tags = ("knowledge", "lexical", "wordnet")

    def __init__(self, wordnet_dir: str | None = None, n_train: int = 10):
        self.wordnet_dir = None if wordnet_dir is None else str(wordnet_dir)
        self.n_train = n_train


@register_scenario("wordnet_definition")
class WordNetDefinition(_WordNetScenario):
    description = "WordNet definition -> word (first senses of frequent concrete nouns)"
    default_method = ADAPT_GENERATION
    main_metric = "quasi_exact_match"
    adapter_overrides = {
        "instructions": "Give the word that matches the definition.",
        "input_prefix": "Definition: ",
        "output_prefix": "Word: ",
        "max_tokens": 5,
        "max_train_instances": 5,
    }

    def get_instances(self, seed: int = 0) -> list[Instance]:
        synsets = load_synsets(self.wordnet_dir, "n")
        seen, instances = set(), []
        for lemma, sid, _ in frequent_senses(self.wordnet_dir, "n"):
            s = synsets.get(sid)
            if s is None or s.lexname not in CONCRETE_LEXNAMES or sid in seen or not s.definition:
                continue
            seen.add(sid)
            words = [lemma] + [w for w in s.words if w.lower() != lemma and " " not in w]
            refs = tuple(Reference(w, (CORRECT_TAG,)) for w in words)
            instances.append(Instance(s.definition, refs, sub_split=CONCRETE_LEXNAMES[s.lexname]))
        return _split(instances, self.n_train, random.Random(seed))


@register_scenario("wordnet_synonym")
class WordNetSynonym(_WordNetScenario):
    description = "Which word means the same as X? (WordNet synsets, 4 choices)"
    default_method = ADAPT_MULTIPLE_CHOICE_JOINT
    main_metric = "exact_match"
    adapter_overrides = {
        "instructions": "Choose the word that means the same.",
        "max_train_instances": 5,
    }

    def get_instances(self, seed: int = 0) -> list[Instance]:
        rng = random.Random(seed)
        synsets = load_synsets(self.wordnet_dir, "nva")
        pools: dict[str, list[str]] = {}
        items = []
        for lemma, sid, _ in frequent_senses(self.wordnet_dir, "nva"):
            s = synsets.get(sid)
            if s is None:
                continue
            pools.setdefault(s.pos, []).append(lemma)
            others = [w for w in s.words if w.lower() != lemma and w.isalpha() and w.lower() == w]
            if others:
                items.append((lemma, others[0], s))
        instances = []
        for lemma, synonym, s in items:
            excluded = {w.lower() for w in s.words}
            candidates = [w for w in pools[s.pos] if w not in excluded]
            distractors = rng.sample(candidates, 3)
            question = f'Which word means the same as "{lemma}"?'
            instances.append(
                Instance(question, _choices(synonym, distractors, rng), sub_split=POS_NAMES[s.pos])
            )
        return _split(instances, self.n_train, rng)


@register_scenario("wordnet_hypernym")
class WordNetHypernym(_WordNetScenario):
    description = "X is a kind of ...? (WordNet hypernyms of frequent nouns, 4 choices, scored separately)"
    default_method = ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL
    main_metric = "exact_match"
    adapter_overrides = {
        "input_prefix": "",
        "input_suffix": "",
        "output_prefix": " ",
        "max_train_instances": 3,
    }

    def get_instances(self, seed: int = 0) -> list[Instance]:
        rng = random.Random(seed)
        synsets = load_synsets(self.wordnet_dir, "n")

        def chain(sid: str) -> set[str]:
            out, todo = set(), [sid]
            while todo:
                cur = todo.pop()
                for h in synsets[cur].hypernyms if cur in synsets else ():
                    if h not in out:
                        out.add(h)
                        todo.append(h)
            return out

        frequent = [
            (lemma, sid) for lemma, sid, _ in frequent_senses(self.wordnet_dir, "n") if sid in synsets
        ]
        instances = []
        for lemma, sid in frequent:
            s = synsets[sid]
            hyper = [synsets[h] for h in s.hypernyms if h in synsets]
            if not hyper:
                continue
            answer = hyper[0].words[0]
            if " " in answer or answer.lower() == lemma:
                continue
            banned = {w.lower() for h in chain(sid) | {sid} for w in synsets[h].words}
            candidates = [w for w, other in frequent if w not in banned and other != sid]
            distractors = rng.sample(candidates, 3)
            article = "an" if lemma[0] in "aeiou" else "a"
            instances.append(
                Instance(
                    f"{article.capitalize()} {lemma} is a kind of",
                    _choices(answer, distractors, rng),
                    sub_split="noun",
                )
            )
        return _split(instances, self.n_train, rng)


@register_scenario("wordnet_gloss_lm")
class WordNetGlossLM(_WordNetScenario):
    description = "Language modelling of WordNet glosses of frequent nouns (bits per byte)"
    default_method = ADAPT_LANGUAGE_MODELING
    main_metric = "bits_per_byte"
    tags = ("language_modeling", "wordnet")

    def get_instances(self, seed: int = 0) -> list[Instance]:
        synsets = load_synsets(self.wordnet_dir, "n")
        instances = [
            Instance(synsets[sid].gloss, (), sub_split="noun")
            for _, sid, _ in frequent_senses(self.wordnet_dir, "n")
            if sid in synsets
        ]
        return _split(instances, 0, random.Random(seed))
