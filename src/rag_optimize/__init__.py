"""rag-optimize: drop-in speed for existing LangChain and LlamaIndex RAG apps.

Public names are re-exported here (``X as X`` marks an explicit re-export); everything else
may move between releases.
"""

from rag_optimize.embedding import Embedder as Embedder
from rag_optimize.embedding import HashingEmbedder as HashingEmbedder
from rag_optimize.errors import ConfigurationError as ConfigurationError
from rag_optimize.errors import EmbeddingError as EmbeddingError
from rag_optimize.errors import InvalidInputError as InvalidInputError
from rag_optimize.errors import InvalidVectorError as InvalidVectorError
from rag_optimize.errors import QueueFull as QueueFull
from rag_optimize.errors import RagOptimizeError as RagOptimizeError
from rag_optimize.errors import RetrievalError as RetrievalError
from rag_optimize.errors import StoreError as StoreError

__version__ = "0.1.0"

# Components add their public names below, one `from ... import X as X` line each.
from rag_optimize.embedding.batching import BatchingEmbedder as BatchingEmbedder
from rag_optimize.embedding.local import LocalEmbedder as LocalEmbedder
from rag_optimize.embedding.local import default_embedder as default_embedder
