"""gen_ai.provider.name spelling: framework names -> the conventions' well-known values."""

from __future__ import annotations

import pytest

from rag_optimize.tracing import provider_from_class_name, provider_name


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("openai", "openai"),
        ("OpenAI", "openai"),
        ("azure", "azure.ai.openai"),
        ("anthropic", "anthropic"),
        ("google_genai", "gcp.gen_ai"),
        ("googlegenerativeai", "gcp.gen_ai"),  # LangChain's class-name fallback
        ("google_vertexai", "gcp.vertex_ai"),
        ("bedrock", "aws.bedrock"),
        ("amazon_bedrock", "aws.bedrock"),
        ("mistralai", "mistral_ai"),
        ("xai", "x_ai"),
        ("aws.bedrock", "aws.bedrock"),  # already well-known
        ("ollama", "ollama"),  # no well-known value: a custom one, passed through
    ],
)
def test_langchain_provider_names(raw: str, want: str) -> None:
    assert provider_name(raw) == want


@pytest.mark.parametrize(
    ("class_name", "want"),
    [
        ("OpenAI", "openai"),
        ("OpenAIEmbedding", "openai"),
        ("AzureOpenAI", "azure.ai.openai"),
        ("AzureOpenAIEmbedding", "azure.ai.openai"),
        ("BedrockConverse", "aws.bedrock"),
        ("BedrockEmbedding", "aws.bedrock"),
        ("GoogleGenAI", "gcp.gen_ai"),
        ("MistralAI", "mistral_ai"),
        ("HuggingFaceEmbedding", "huggingface"),
        ("MockLLM", "mock"),
    ],
)
def test_llamaindex_class_names(class_name: str, want: str) -> None:
    assert provider_from_class_name(class_name) == want


@pytest.mark.parametrize("raw", [None, "", "  ", 3])
def test_nothing_is_guessed_from_nothing(raw: object) -> None:
    assert provider_name(raw) is None
    assert provider_from_class_name(raw) is None
