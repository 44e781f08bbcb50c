"""GenAI provider names as the OpenTelemetry GenAI conventions spell them.

``gen_ai.provider.name`` is required on inference and embeddings spans and metrics. The
conventions list well-known values (``openai``, ``anthropic``, ``aws.bedrock``,
``azure.ai.openai``, ``gcp.gen_ai``, ...) that MUST be used when one applies; frameworks name
providers their own way (LangChain's ``ls_provider`` says ``"azure"`` or ``"google_genai"``,
LlamaIndex's model classes ``AzureOpenAI`` or ``GoogleGenAI``). :func:`provider_name` maps the
framework's name onto the well-known value, and passes any other name through lower-cased
(the conventions allow a custom value when no well-known one applies).
"""

from __future__ import annotations

__all__ = ["WELL_KNOWN_PROVIDERS", "provider_from_class_name", "provider_name"]

#: The well-known ``gen_ai.provider.name`` values (semantic-conventions-genai registry).
WELL_KNOWN_PROVIDERS: frozenset[str] = frozenset(
    {
        "anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai", "cohere",
        "deepseek", "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai", "groq", "ibm.watsonx.ai",
        "mistral_ai", "moonshot_ai", "openai", "perplexity", "x_ai",
    }
)  # fmt: skip

# Framework spellings (lower-cased; LangChain ``ls_provider`` values and LlamaIndex model
# class names) -> well-known value.
_ALIASES: dict[str, str] = {
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azureopenai": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "azureaimodelinference": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "bedrockconverse": "aws.bedrock",
    "google_genai": "gcp.gen_ai",
    "googlegenerativeai": "gcp.gen_ai",
    "googlegenai": "gcp.gen_ai",
    "gemini": "gcp.gemini",
    "google_vertexai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "ibm": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "watsonxllm": "ibm.watsonx.ai",
    "moonshot": "moonshot_ai",
    "chatanthropic": "anthropic",
    "chatopenai": "openai",
}


def provider_name(raw: object) -> str | None:
    """The conventions' provider name for a framework's ``raw`` provider or model class name.

    None for an empty or non-string value (the attribute is then left out rather than filled
    with a guess).
    """
    if not isinstance(raw, str) or not raw.strip():
        return None
    key = raw.strip().lower()
    if key in WELL_KNOWN_PROVIDERS:
        return key
    return _ALIASES.get(key, key)


_CLASS_SUFFIXES = ("multimodal", "embeddings", "embedding", "llm")


def provider_from_class_name(class_name: object) -> str | None:
    """The provider of a model class named ``class_name`` (LlamaIndex's ``OpenAIEmbedding``,
    ``AzureOpenAI``, ``BedrockConverse``): the name without its ``Embedding`` / ``LLM``
    suffix, through :func:`provider_name`."""
    if not isinstance(class_name, str) or not class_name.strip():
        return None
    key = class_name.strip().lower()
    for suffix in _CLASS_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
            break
    return provider_name(key)
