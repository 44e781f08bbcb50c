"""The decision wing of the cache: whether a candidate the vector search found may be served.

``models`` (optional stronger verifiers behind extras: a second embedding model, a
cross-encoder), ``words`` (the stored query's word vectors kept with its entry),
``pipeline`` (stage 2 of a lookup: named signals, from ``signals``, ``alignment`` and the word
lists of ``lexicon``, that veto what one sentence vector cannot see), ``verifiers`` (the
verifier protocol, composition, and the rule-only ``MismatchVerifier``),
``calibration`` (choosing a threshold from labelled pairs), ``error_budget`` (learning the
threshold from verified outcomes, with a certificate), ``learning`` (gathering those outcomes),
``shadow`` (observing without serving) and ``judges`` (comparing a stored answer with a fresh
one). The public names are re-exported from :mod:`rag_optimize.cache`.
"""

from rag_optimize.cache.decision.calibration import CalibrationResult, calibrate_threshold
from rag_optimize.cache.decision.error_budget import ErrorBudget
from rag_optimize.cache.decision.judges import EmbeddingJudge, ExactMatchJudge
from rag_optimize.cache.decision.models import CrossEncoderVerifier, EmbeddingVerifier
from rag_optimize.cache.decision.shadow import ShadowReport
from rag_optimize.cache.decision.verifiers import AllOf, MismatchVerifier, Verifier
from rag_optimize.cache.decision.pipeline import DecisionPipeline, default_pipeline
from rag_optimize.cache.decision.lexicon import load_lexicon

__all__ = [
    "AllOf",
    "CrossEncoderVerifier",
    "DecisionPipeline",
    "CalibrationResult",
    "EmbeddingJudge",
    "EmbeddingVerifier",
    "ErrorBudget",
    "ExactMatchJudge",
    "MismatchVerifier",
    "ShadowReport",
    "Verifier",
    "calibrate_threshold",
    "default_pipeline",
    "load_lexicon",
]
