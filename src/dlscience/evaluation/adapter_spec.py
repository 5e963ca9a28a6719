"""How instances become prompts: HELM's ``AdapterSpec`` (standardised prompting, Liang et al. 2022, §3.2).

Methods
-------
``generation``
    Prompt = instructions + in-context examples + the input; the model generates the answer.
``multiple_choice_joint``
    All choices are listed with letters ``A.``, ``B.``, ...; the model generates a letter, mapped back to the
    choice through ``output_mapping``. HELM's helper sets temperature 0, stop ``"\\n"``, 5 shots, 1 token.
``multiple_choice_separate_original``
    Each choice is scored separately by its mean token log probability as a continuation of the prompt.
``multiple_choice_separate_calibrated``
    As above, minus the choice's log probability after a null prompt (``"Answer:"``), summed over tokens.
``language_modeling``
    The log probability of the input text itself (bits per byte, perplexity).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from dlscience.errors import InputValidationError

__all__ = [
    "ADAPT_GENERATION",
    "ADAPT_MULTIPLE_CHOICE_JOINT",
    "ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL",
    "ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED",
    "ADAPT_LANGUAGE_MODELING",
    "METHODS",
    "AdapterSpec",
    "multiple_choice_joint_spec",
]

ADAPT_GENERATION = "generation"
ADAPT_MULTIPLE_CHOICE_JOINT = "multiple_choice_joint"
ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL = "multiple_choice_separate_original"
ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED = "multiple_choice_separate_calibrated"
ADAPT_LANGUAGE_MODELING = "language_modeling"
METHODS = (
    ADAPT_GENERATION,
    ADAPT_MULTIPLE_CHOICE_JOINT,
    ADAPT_MULTIPLE_CHOICE_SEPARATE_ORIGINAL,
    ADAPT_MULTIPLE_CHOICE_SEPARATE_CALIBRATED,
    ADAPT_LANGUAGE_MODELING,
)


@dataclass(frozen=True)
class AdapterSpec:
    """Prompt pieces and decoding settings of one run (field names and defaults as HELM's).

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    instructions : str
        Text before everything else (followed by a blank line when non-empty).
    input_prefix, input_suffix, output_prefix, output_suffix : str
        Around each input and output; an example reads ``input_prefix + input + input_suffix + output_prefix
        + output + output_suffix``.
    reference_prefix, reference_suffix : str
        Around each choice in MC-joint (``"A. "`` ... ``"\\n"``).
    instance_prefix : str
        Between in-context examples.
    max_train_instances : int
        In-context examples (HELM default 5).
    max_eval_instances : int or None
        Evaluation instances kept (sampled without replacement, seed 0).
    num_outputs, temperature, max_tokens, stop_sequences
        Decoding (HELM defaults 5, 1.0, 100; here 1 completion at temperature 0 unless set).
    num_train_trials : int
        Repeats with different in-context examples (seeds 0, 1, ...).
    model : str
    use_chat_template : bool
        Send each prompt as one user turn of the model's chat template.
    """

    method: str = ADAPT_GENERATION
    instructions: str = ""
    input_prefix: str = "Input: "
    input_suffix: str = "\n"
    output_prefix: str = "Output: "
    output_suffix: str = "\n"
    reference_prefix: str = "A. "
    reference_suffix: str = "\n"
    instance_prefix: str = "\n"
    max_train_instances: int = 5
    max_eval_instances: int | None = None
    num_outputs: int = 1
    num_train_trials: int = 1
    temperature: float = 0.0
    max_tokens: int = 100
    stop_sequences: tuple[str, ...] = ("\n",)
    model: str = ""
    use_chat_template: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputValidationError(
                f"AdapterSpec.method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.max_train_instances < 0 or self.num_train_trials < 1 or self.num_outputs < 1:
            raise InputValidationError(
                "AdapterSpec needs max_train_instances >= 0, num_train_trials >= 1 and num_outputs >= 1"
            )
        if self.max_eval_instances is not None and self.max_eval_instances < 1:
            raise InputValidationError(f"max_eval_instances must be >= 1, got {self.max_eval_instances}")
        object.__setattr__(self, "stop_sequences", tuple(self.stop_sequences))

    def to_json(self) -> dict:
        d = asdict(self)
        d["stop_sequences"] = list(self.stop_sequences)
        return d

    @classmethod
    def from_json(cls, d: dict) -> AdapterSpec:
        return cls(**d)

    def with_(self, **changes) -> AdapterSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


def multiple_choice_joint_spec(**overrides) -> AdapterSpec:
    """HELM's multiple-choice-joint defaults: temperature 0, stop ``"\\n"``, 5 shots, 1 output token, prompt
    ``Question: ... \\nA. ...\\nB. ...\\nAnswer: X``."""
    base = dict(
        method=ADAPT_MULTIPLE_CHOICE_JOINT,
        instructions="",
        input_prefix="Question: ",
        input_suffix="\n",
        output_prefix="Answer: ",
        output_suffix="\n",
        temperature=0.0,
        max_tokens=1,
        stop_sequences=("\n",),
        max_train_instances=5,
    )
    base.update(overrides)
    return AdapterSpec(**base)
