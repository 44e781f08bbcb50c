"""A realistic question stream over the demo corpus: popular questions, paraphrases, repeats.

Every passage of the corpus is an *intent* (what the user wants to know). Real traffic is
skewed: a few intents are asked again and again, most rarely. The stream draws intents with
Zipf-like popularity (weight ``1 / rank**s``) and phrases each draw with one of several
paraphrase templates, so the stream holds exact repeats, paraphrases of earlier questions,
and questions asked only once. Deterministic for a given seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rag_optimize_demo.corpus import SERVICES, SYMPTOMS, TOPICS

TEMPLATES: dict[str, tuple[str, ...]] = {
    "what": (
        "What is {x}?",
        "Can you explain what {x} is?",
        "what is {x}",
        "Explain {x} to me.",
        "What does {x} mean?",
    ),
    "use": (
        "How should I use {x}?",
        "What is the best way to use {x}?",
        "How do I use {x} in practice?",
        "how to use {x}",
    ),
    "pitfall": (
        "What are common mistakes with {x}?",
        "What should I watch out for with {x}?",
        "What can go wrong with {x}?",
        "pitfalls of {x}",
    ),
    "runbook": (
        "What should I do when {x}?",
        "{x}: what should I do?",
        "What do I do if {x}?",
        "what to do when {x}",
    ),
}


@dataclass(frozen=True)
class Question:
    text: str
    intent: str  # the passage id the question is about


def intents() -> list[tuple[str, str, str]]:
    """(intent id, kind, subject) for every passage of the corpus."""
    out = []
    for i, topic in enumerate(TOPICS):
        for kind in ("what", "use", "pitfall"):
            out.append((f"t{i:02d}-{kind}", kind, topic.name))
    for s, service in enumerate(SERVICES):
        for k, (symptom, _) in enumerate(SYMPTOMS):
            out.append((f"rb-{s:02d}-{k:02d}", "runbook", f"{service} {symptom}"))
    return out


def question_stream(
    n: int, seed: int = 7, zipf_s: float = 1.1, only: set[str] | None = None
) -> list[Question]:
    """``n`` questions drawn with Zipf popularity over the intents (those in ``only``, when
    given: the passage ids of a smaller corpus), each phrased at random."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    pool = [x for x in intents() if only is None or x[0] in only]
    if not pool:
        raise ValueError("no intents left to ask about")
    rng.shuffle(pool)
    weights = [1.0 / (rank + 1) ** zipf_s for rank in range(len(pool))]
    out = []
    for intent, kind, subject in rng.choices(pool, weights=weights, k=n):
        template = rng.choice(TEMPLATES[kind])
        out.append(Question(template.format(x=subject), intent))
    return out


def stream_stats(questions: list[Question]) -> dict[str, int]:
    """How many questions are first asks, exact repeats, and paraphrases of earlier ones."""
    seen_text: set[str] = set()
    seen_intent: set[str] = set()
    counts = {"questions": len(questions), "first": 0, "repeats": 0, "paraphrases": 0}
    for q in questions:
        if q.text in seen_text:
            counts["repeats"] += 1
        elif q.intent in seen_intent:
            counts["paraphrases"] += 1
        else:
            counts["first"] += 1
        seen_text.add(q.text)
        seen_intent.add(q.intent)
    return counts
