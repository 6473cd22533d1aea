"""The prompt templates and answer tokens of the SDK's tasks, shared by training and the bundle manifest."""

from __future__ import annotations

from redone_sdk.bundle.manifest import LabelSpec, TaskSpec
from redone_sdk.labeled_data import HARM_LABELS
from redone_sdk.labeled_data import QUERYCORR_GRADES as GRADES

__all__ = [
    "CONTROL_TOKENS",
    "PAD_TOKEN",
    "END_TOKEN",
    "SCORING_TASKS",
    "user_text",
    "MODERATION_TEMPLATE",
    "MATCHING_TEMPLATE",
    "answer_token",
    "answer_tokens",
    "build_task_specs",
    "GRADE_VALUES",
]

PAD_TOKEN = "<|endoftext|>"
END_TOKEN = "<|im_end|>"
CONTROL_TOKENS = (PAD_TOKEN, "<|im_start|>", END_TOKEN)

MODERATION_TEMPLATE = (
    "<|im_start|>user\n审核这条笔记，回答 safe / offensive / hate / sexism：\n{text}<|im_end|>\n<|im_start|>assistant\n"
)
MATCHING_TEMPLATE = (
    "<|im_start|>user\nRate the note's relevance to the query (-1 to 3).\nQuery: {query}\nNote: {note}"
    "<|im_end|>\n<|im_start|>assistant\n"
)

# Expected-relevance value of each SNS-Bench grade: -1 (unrelated) … 3 (exact), spread evenly over [0, 1].
GRADE_VALUES = {"-1": 0.0, "0": 0.25, "1": 0.5, "2": 0.75, "3": 1.0}


# SFT task name -> the scoring task (bundle task) it trains, for the tasks answered with one answer token.
SCORING_TASKS = {"moderation": "moderation", "querycorr": "matching"}


def user_text(template: str) -> str:
    """The user turn inside a scoring template (between `<|im_start|>user\n` and `<|im_end|>`)."""
    return template.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def answer_token(label: str) -> str:
    """The atomic answer token of a label, e.g. `<offensive>`, `<grade:2>`."""
    return f"<grade:{label}>" if label in GRADES else f"<{label}>"


def answer_tokens() -> list[str]:
    return [answer_token(label) for label in (*HARM_LABELS, *GRADES)]


def build_task_specs(
    token_ids: dict[str, int],
    *,
    moderation_max_length: int,
    matching_max_length: int,
    moderation_template: str = MODERATION_TEMPLATE,
    matching_template: str = MATCHING_TEMPLATE,
) -> dict[str, TaskSpec]:
    """Task specs whose label columns index the scoring graph's output (answer_tokens() order); the templates
    default to the causal model's chat prompts (the prefix-LM passes its own)."""
    columns = {token: i for i, token in enumerate(answer_tokens())}

    def label(name: str, value: float | None = None) -> LabelSpec:
        token = answer_token(name)
        return LabelSpec(name=name, token=token, token_id=token_ids[token], column=columns[token], value=value)

    return {
        "moderation": TaskSpec(
            kind="moderation",
            template=moderation_template,
            fields=("text",),
            truncate_field="text",
            max_length=moderation_max_length,
            labels=tuple(label(name) for name in HARM_LABELS),
            safe_label="safe",
        ),
        "matching": TaskSpec(
            kind="matching",
            template=matching_template,
            fields=("query", "note"),
            truncate_field="note",
            field_max_tokens={"query": 48},
            max_length=matching_max_length,
            labels=tuple(label(g, GRADE_VALUES[g]) for g in GRADES),
        ),
    }
