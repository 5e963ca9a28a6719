"""Perturbations for robustness and fairness (HELM's ``augmentations``; Liang et al. 2022, §4.5-4.6).

Each perturbation rewrites an instance's input (and, where HELM does, its references) with a random generator
seeded by the instance id, so the same instance is perturbed the same way in every run and for every model.

Robustness (invariance; references untouched):
``typos`` (p = 0.1 per letter: a random adjacent QWERTY key, case kept), ``misspellings`` (p = 0.1 per word
found in a list of common misspellings), ``lowercase``, ``contractions`` (``is not`` -> ``isn't``, only before a
space), ``extra_spaces`` (each run of spaces -> 1-3 spaces), and ``mild_mix`` = lowercase, contractions,
misspellings, extra spaces in that order (HELM's canonical robustness perturbation).

Fairness (equivariance; references perturbed too): ``gender`` (male -> female pronouns, p = 1) and ``dialect``
(Standard American English -> African American English, p = 1).

The misspelling list and the dialect map here are small hand-made subsets: HELM's own files (a Wikipedia-derived
list of ~4,000 misspellings, and the SAE->AAVE map of Ziems et al. 2022) are downloaded or bundled with
crfm-helm; pass ``mapping=`` / ``misspellings=`` to use fuller lists.
"""

from __future__ import annotations

import re
from dataclasses import replace
from random import Random

from dlscience.errors import InputValidationError
from dlscience.evaluation.scenario import Instance, PerturbationDescription, Reference

__all__ = [
    "Perturbation",
    "TyposPerturbation",
    "MisspellingPerturbation",
    "LowerCasePerturbation",
    "ContractionPerturbation",
    "SpacePerturbation",
    "MildMixPerturbation",
    "GenderPerturbation",
    "DialectPerturbation",
    "PERTURBATIONS",
    "make_perturbation",
    "match_case",
]


def match_case(source: str, target: str) -> str:
    """``target`` with ``source``'s case: all lower, all upper or capitalised (HELM's ``match_case``)."""
    if all(c.islower() for c in source):
        return target.lower()
    if all(c.isupper() for c in source):
        return target.upper()
    if source and source[0].isupper():
        return target.capitalize()
    return target


class Perturbation:
    """A text rewrite applied to an instance. Subclasses set ``name``, ``robustness`` / ``fairness`` and
    ``perturb_references`` and implement :meth:`perturb`."""

    name = "perturbation"
    robustness = False
    fairness = False
    perturb_references = False

    @property
    def description(self) -> PerturbationDescription:
        return PerturbationDescription(self.name, robustness=self.robustness, fairness=self.fairness)

    def perturb(self, text: str, rng: Random) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, instance: Instance, seed: int | None = None) -> Instance:
        """The perturbed copy (same id), with ``perturbation`` set; rng seeded by ``(seed, instance id)``."""
        if instance.id is None:
            raise InputValidationError("perturbing an instance needs its id (see scenario.with_ids)")
        rng = Random(instance.id if seed is None else str(seed) + instance.id)
        refs = instance.references
        if self.perturb_references:  # references first, then the input: HELM's order of random draws
            refs = tuple(Reference(self.perturb(r.output, rng), r.tags) for r in refs)
        return replace(
            instance, input=self.perturb(instance.input, rng), references=refs, perturbation=self.description
        )


class TyposPerturbation(Perturbation):
    """Each letter, with probability ``prob``, becomes a random neighbouring key (HELM's ``typos``)."""

    name = "typos"
    robustness = True
    KEYS = {
        "q": "was", "w": "qesad", "e": "wsdfr", "r": "edfgt", "t": "rfghy", "y": "tghju", "u": "yhjki",
        "i": "ujklo", "o": "iklp", "p": "ol", "a": "qwsz", "s": "weadzx", "d": "erfcxs", "f": "rtgvcd",
        "g": "tyhbvf", "h": "yujnbg", "j": "uikmnh", "k": "iolmj", "l": "opk", "z": "asx", "x": "sdcz",
        "c": "dfvx", "v": "fgbc", "b": "ghnv", "n": "hjmb", "m": "jkn",
    }  # fmt: skip

    def __init__(self, prob: float = 0.1):
        self.prob = prob

    def perturb(self, text: str, rng: Random) -> str:
        out = []
        for letter in text:
            low = letter.lower()
            new = low
            if low in self.KEYS and rng.random() < self.prob:
                new = rng.choice(list(self.KEYS[low]))
            out.append(new.upper() if low != letter else new)
        return "".join(out)


#: correct word -> common misspellings (a small hand-made list; HELM bundles ~4,000 from Wikipedia's list)
MISSPELLINGS = {
    "about": ["abotu", "abuot"], "across": ["accross"], "address": ["adress"], "again": ["agian"],
    "animal": ["aminal"], "another": ["anohter"], "because": ["becuase", "beacuse"], "before": ["befor"],
    "being": ["bieng"], "believe": ["beleive"], "between": ["bewteen", "betwen"], "body": ["bodie"],
    "building": ["buliding"], "business": ["buisness"], "certain": ["certian"], "common": ["comon"],
    "condition": ["conditon"], "country": ["contry"], "different": ["diffrent"], "especially": ["especialy"],
    "example": ["exmaple"], "experience": ["experiance"], "family": ["famliy"], "first": ["frist"],
    "following": ["folowing"], "friend": ["freind"], "from": ["form", "fromt"], "government": ["goverment"],
    "group": ["gruop"], "having": ["haveing"], "important": ["importent"], "instrument": ["instrumnet"],
    "into": ["inot"], "knowledge": ["knowlege"], "language": ["langauge"], "large": ["lagre"],
    "light": ["ligth"], "made": ["maed"], "member": ["memeber"], "movement": ["movment"],
    "necessary": ["neccessary", "necesary"], "number": ["numbre"], "occur": ["ocur"],
    "occurrence": ["occurence"], "other": ["ohter"], "people": ["poeple", "peopel"], "person": ["preson"],
    "place": ["palce"], "plant": ["palnt"], "position": ["postion"], "possible": ["possable"],
    "process": ["proces"], "quality": ["qualtiy"], "receive": ["recieve"], "relating": ["relaitng"],
    "separate": ["seperate"], "similar": ["similiar"], "something": ["somthing"], "surface": ["surfce"],
    "that": ["taht"], "their": ["thier"], "there": ["tehre"], "these": ["thees"], "thing": ["thign"],
    "through": ["throught", "thru"], "together": ["togehter"], "used": ["usd"], "usually": ["usualy"],
    "water": ["watter"], "which": ["whcih", "wich"], "with": ["wiht", "whit"], "without": ["withuot"],
    "woman": ["womna"], "would": ["woudl"], "written": ["writen"], "young": ["yuong"],
}  # fmt: skip


class MisspellingPerturbation(Perturbation):
    """Each word that has a known misspelling is replaced by one with probability ``prob`` (case kept)."""

    name = "misspellings"
    robustness = True

    def __init__(self, prob: float = 0.1, misspellings: dict[str, list[str]] | None = None):
        self.prob = prob
        self.misspellings = misspellings or MISSPELLINGS
        self.pattern = re.compile(r"\b({})\b".format("|".join(map(re.escape, self.misspellings))))

    def perturb(self, text: str, rng: Random) -> str:
        def sub(m: re.Match) -> str:
            word = m.group(1)
            if rng.random() < self.prob:
                return match_case(word, str(rng.choice(self.misspellings[word])))
            return word

        return self.pattern.sub(sub, text)


class LowerCasePerturbation(Perturbation):
    name = "lowercase"
    robustness = True

    def perturb(self, text: str, rng: Random) -> str:
        return text.lower()


#: contraction -> expansion (HELM's ``CONTRACTION_MAP``, crfm-helm 0.5.16, Apache-2.0)
CONTRACTION_MAP = {
    "ain't": "is not", "aren't": "are not", "can't": "cannot", "can't've": "cannot have",
    "could've": "could have", "couldn't": "could not", "didn't": "did not", "doesn't": "does not",
    "don't": "do not", "hadn't": "had not", "hasn't": "has not", "haven't": "have not", "he'd": "he would",
    "he'd've": "he would have", "he'll": "he will", "he's": "he is", "how'd": "how did",
    "how'd'y": "how do you", "how'll": "how will", "how's": "how is", "I'd": "I would", "I'll": "I will",
    "I'm": "I am", "I've": "I have", "i'd": "i would", "i'll": "i will", "i'm": "i am", "i've": "i have",
    "isn't": "is not", "it'd": "it would", "it'll": "it will", "it's": "it is", "ma'am": "madam",
    "might've": "might have", "mightn't": "might not", "must've": "must have", "mustn't": "must not",
    "needn't": "need not", "oughtn't": "ought not", "shan't": "shall not", "she'd": "she would",
    "she'll": "she will", "she's": "she is", "should've": "should have", "shouldn't": "should not",
    "that'd": "that would", "that's": "that is", "there'd": "there would", "there's": "there is",
    "they'd": "they would", "they'll": "they will", "they're": "they are", "they've": "they have",
    "wasn't": "was not", "we'd": "we would", "we'll": "we will", "we're": "we are", "we've": "we have",
    "weren't": "were not", "what're": "what are", "what's": "what is", "when's": "when is",
    "where'd": "where did", "where's": "where is", "where've": "where have", "who'll": "who will",
    "who's": "who is", "who've": "who have", "why's": "why is", "won't": "will not",
    "would've": "would have", "wouldn't": "would not", "you'd": "you would", "you'd've": "you would have",
    "you'll": "you will", "you're": "you are", "you've": "you have",
}  # fmt: skip


class ContractionPerturbation(Perturbation):
    """Expanded forms followed by a space become contractions (``She is a`` -> ``She's a``)."""

    name = "contractions"
    robustness = True

    def __init__(self):
        self.reverse = {v: k for k, v in CONTRACTION_MAP.items()}
        self.pattern = re.compile(
            r"\b({})\b ".format("|".join(map(re.escape, self.reverse))), flags=re.IGNORECASE | re.DOTALL
        )

    def perturb(self, text: str, rng: Random) -> str:
        def sub(m: re.Match) -> str:
            match = m.group(1)
            contraction = self.reverse.get(match, self.reverse.get(match.lower()))
            return match_case(match, contraction) + " "

        return self.pattern.sub(sub, text)


class SpacePerturbation(Perturbation):
    """Each run of spaces becomes 1 to ``max_spaces`` spaces (HELM's ``space``)."""

    name = "extra_spaces"
    robustness = True

    def __init__(self, max_spaces: int = 3):
        self.max_spaces = max_spaces

    def perturb(self, text: str, rng: Random) -> str:
        return re.sub(r" +", lambda m: " " * rng.randint(1, self.max_spaces), text)


class MildMixPerturbation(Perturbation):
    """HELM's canonical robustness perturbation: lowercase, contractions, misspellings (p = 0.1), extra
    spaces (up to 3), in that order, with one generator."""

    name = "mild_mix"
    robustness = True

    def __init__(self):
        self.steps = [
            LowerCasePerturbation(),
            ContractionPerturbation(),
            MisspellingPerturbation(0.1),
            SpacePerturbation(3),
        ]

    def perturb(self, text: str, rng: Random) -> str:
        for step in self.steps:
            text = step.perturb(text, rng)
        return text


class _SubstitutionPerturbation(Perturbation):
    """Word substitution with probability ``prob`` where a word is surrounded by non-word characters."""

    fairness = True
    perturb_references = True
    boundary = r"[^\w]"

    def __init__(self, pairs: list[tuple[str, str]], prob: float = 1.0):
        self.pairs = pairs
        self.prob = prob

    def perturb(self, text: str, rng: Random) -> str:
        for word, target in self.pairs:
            pattern = f"{self.boundary}({re.escape(word)}){self.boundary}"

            def sub(m: re.Match, target=target) -> str:
                full, found = m.group(0), m.group(1)
                if rng.uniform(0, 1) < self.prob:
                    return full.replace(found, match_case(found, target))
                return full

            text = re.sub(pattern, sub, text, flags=re.IGNORECASE)
        return text


#: (neutral, female, male) pronouns, Lauscher et al. 2022 via HELM; the first match wins for "his" / "her"
GENDER_PRONOUNS = [
    ("they", "she", "he"),
    ("them", "her", "him"),
    ("their", "her", "his"),
    ("theirs", "hers", "his"),
    ("themselves", "herself", "himself"),
]


class GenderPerturbation(_SubstitutionPerturbation):
    """Male -> female pronouns with probability 1 (HELM's ``gender``, mode ``pronouns``). As in HELM a word
    must have a non-word character on both sides (a pronoun at the very start or end of a text is kept)."""

    name = "gender"

    def __init__(self, prob: float = 1.0, source: str = "male", target: str = "female"):
        index = {"neutral": 0, "female": 1, "male": 2}
        if source not in index or target not in index:
            raise InputValidationError(
                f"gender classes are neutral, female, male; got {source!r}, {target!r}"
            )
        super().__init__([(m[index[source]], m[index[target]]) for m in GENDER_PRONOUNS], prob)


#: Standard American English -> African American English (a small subset in the style of Ziems et al. 2022's
#: map that HELM downloads)
SAE_TO_AAVE = {
    "the": "da", "this": "dis", "that": "dat", "these": "dese", "those": "dem", "with": "wit",
    "brother": "brotha", "sister": "sista", "about": "bout", "going to": "gonna", "want to": "wanna",
    "nothing": "nothin", "something": "somethin", "anything": "anythin", "thing": "thang",
    "your": "yo", "you all": "y'all", "because": "cuz", "isn't": "ain't", "is not": "ain't",
    "aren't": "ain't", "doesn't": "don't", "little": "lil", "them": "em", "children": "chillen",
    "with them": "wit em", "think": "thank", "getting": "gettin", "before": "befo", "more": "mo",
}  # fmt: skip


class DialectPerturbation(_SubstitutionPerturbation):
    """SAE -> AAE word substitutions with probability 1 (HELM's ``dialect``); hyphens also bound words."""

    name = "dialect"
    boundary = r"[^\w-]"

    def __init__(self, prob: float = 1.0, mapping: dict[str, str] | None = None):
        mapping = mapping or SAE_TO_AAVE
        # longer phrases first, so "with them" is replaced before "with"
        super().__init__(sorted(mapping.items(), key=lambda kv: -len(kv[0])), prob)


PERTURBATIONS = {
    "typos": TyposPerturbation,
    "misspellings": MisspellingPerturbation,
    "lowercase": LowerCasePerturbation,
    "contractions": ContractionPerturbation,
    "extra_spaces": SpacePerturbation,
    "mild_mix": MildMixPerturbation,
    "gender": GenderPerturbation,
    "dialect": DialectPerturbation,
}


def make_perturbation(name: str) -> Perturbation:
    """The perturbation called ``name`` with HELM's default settings."""
    if name not in PERTURBATIONS:
        raise InputValidationError(f"unknown perturbation {name!r}; choose from {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[name]()
