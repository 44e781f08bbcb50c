"""The decision wing of the cache: whether a candidate the vector search found may be served.

``verifiers`` (stage 2 of a lookup: vetoes on what one sentence vector cannot see),
``calibration`` (choosing a threshold from labelled pairs), ``error_budget`` (learning the
threshold from verified outcomes, with a certificate), ``learning`` (gathering those outcomes),
``shadow`` (observing without serving) and ``judges`` (comparing a stored answer with a fresh
one). The public names are re-exported from :mod:`rag_optimize.cache`.
"""

from rag_optimize.cache.decision.calibration import CalibrationResult, calibrate_threshold
from rag_optimize.cache.decision.error_budget import ErrorBudget
from rag_optimize.cache.decision.judges import EmbeddingJudge, ExactMatchJudge
from rag_optimize.cache.decision.shadow import ShadowReport
from rag_optimize.cache.decision.verifiers import MismatchVerifier, Verifier

__all__ = [
    "CalibrationResult",
    "EmbeddingJudge",
    "ErrorBudget",
    "ExactMatchJudge",
    "MismatchVerifier",
    "ShadowReport",
    "Verifier",
    "calibrate_threshold",
]
