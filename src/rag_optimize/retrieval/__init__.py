"""Hybrid retrieval: concurrent branches, fusion, reranking, and a context budget."""

from rag_optimize.retrieval.branches import Branch, CallableBranch, DenseBranch, SparseBranch
from rag_optimize.retrieval.budget import ContextBudget, PackedContext, estimate_tokens
from rag_optimize.retrieval.calibration import (
    CalibrationOptions,
    FusionCalibration,
    calibrate_fusion,
)
from rag_optimize.retrieval.filters import (
    And,
    Eq,
    Filter,
    In,
    Ne,
    Not,
    NotIn,
    Or,
    Range,
    parse_filter,
)
from rag_optimize.retrieval.fusion import FUSIONS, relative_score, rrf, weighted
from rag_optimize.retrieval.hybrid import (
    DocumentColumns,
    FusionOptions,
    FusionRetriever,
    HybridBuildOptions,
    HybridRetriever,
    WrapOptions,
    wrap_retrievers,
)
from rag_optimize.retrieval.rerank import (
    CohereReranker,
    Reranker,
    RerankError,
    aapply_reranker,
    apply_reranker,
)
from rag_optimize.retrieval.results import RetrievalResult, RetrievedDocument

__all__ = [
    "FUSIONS",
    "And",
    "Eq",
    "Filter",
    "In",
    "Ne",
    "Not",
    "NotIn",
    "Or",
    "Range",
    "parse_filter",
    "Branch",
    "CalibrationOptions",
    "CallableBranch",
    "CohereReranker",
    "ContextBudget",
    "DenseBranch",
    "DocumentColumns",
    "FusionCalibration",
    "FusionOptions",
    "FusionRetriever",
    "HybridBuildOptions",
    "HybridRetriever",
    "PackedContext",
    "RerankError",
    "Reranker",
    "RetrievalResult",
    "RetrievedDocument",
    "SparseBranch",
    "WrapOptions",
    "aapply_reranker",
    "apply_reranker",
    "calibrate_fusion",
    "estimate_tokens",
    "relative_score",
    "rrf",
    "weighted",
    "wrap_retrievers",
]
