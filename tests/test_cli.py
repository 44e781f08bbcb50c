"""The ``rag-optimize`` command line.

As a subprocess, like a user runs it: demo --short end to end (the ``demo`` command comes
from the LangChain adapter's entry point), the installed console script on a bad module
path, cache stats/clear against a real redis-server. Bench on small factories (a real
LangChain chain and a real LlamaIndex query engine, written to a module in a temp dir) and
the table of user mistakes (non-zero exit, one-line message, no traceback) run in-process
through ``main(argv)`` to keep the suite fast (each subprocess pays the framework imports
again).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag_optimize import HashingEmbedder, RedisStore, SemanticCache
from rag_optimize.cli.main import main
from tests.redis_server import RedisServer, free_port, redis_server  # noqa: F401
from tests.rendezvous import ameeting

ROOT = Path(__file__).resolve().parents[1]

FACTORIES = textwrap.dedent(
    """
    import asyncio
    import itertools

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.documents import Document


    class Docs(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return [Document(page_content="Redis is an in-memory store.")]


    def chain():
        prompt = ChatPromptTemplate.from_messages([("human", "{context} {question}")])
        model = GenericFakeChatModel(
            messages=itertools.cycle([AIMessage("Redis keeps data in memory.")])
        )
        return (
            {"context": Docs(), "question": lambda q: q} | prompt | model | StrOutputParser()
        )


    def engine():
        from llama_index.core import Document as LIDocument, VectorStoreIndex
        from llama_index.core.embeddings import MockEmbedding
        from llama_index.core.llms import MockLLM

        index = VectorStoreIndex.from_documents(
            [LIDocument(text="Redis is an in-memory store.")],
            embed_model=MockEmbedding(embed_dim=8),
        )
        return index.as_query_engine(llm=MockLLM(max_tokens=8), streaming=True)


    def globally_cached():
        # sets LangChain's process-wide LLM cache, as an optimized app may do
        from langchain_core.globals import set_llm_cache
        from langchain_rag_optimize import SemanticLLMCache
        from rag_optimize import HashingEmbedder, SemanticCache

        set_llm_cache(SemanticLLMCache(SemanticCache(HashingEmbedder(dim=256), threshold=0.8)))
        return unstreamed_chain()


    def unstreamed_chain():
        # a model without token streaming: LangChain consults the LLM cache for it
        from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel

        prompt = ChatPromptTemplate.from_messages([("human", "{context} {question}")])
        model = FakeMessagesListChatModel(responses=[AIMessage("Redis keeps data in memory.")] * 50)
        return (
            {"context": Docs(), "question": lambda q: q} | prompt | model | StrOutputParser()
        )


    def chain_cached():
        from langchain_rag_optimize import with_semantic_cache
        from rag_optimize import HashingEmbedder, SemanticCache

        return with_semantic_cache(
            chain(), SemanticCache(HashingEmbedder(dim=256), threshold=0.8)
        )


    def plain_function():
        async def answer(question):
            await asyncio.sleep(0.001)
            return question.upper()

        return answer


    def broken():
        raise RuntimeError("model server not configured")


    def dict_chain():
        from langchain_core.runnables import RunnableLambda

        def answer(inputs):
            if not isinstance(inputs, dict):
                raise TypeError("expects a dict")
            if "data" in inputs["question"].lower():
                raise ValueError("index unavailable")
            return "ok"

        return RunnableLambda(answer)
    """
)


def run_cli(
    *args: str, cwd: Path | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess: ``python -m rag_optimize.cli.main`` or the console script."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # the demo distribution from this checkout, whether or not it is installed
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "integrations" / "demo"), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = (
        [str(Path(sys.executable).parent / "rag-optimize")]
        if script
        else [sys.executable, "-m", "rag_optimize.cli.main"]
    )
    return subprocess.run(
        [*command, *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=180
    )


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Outcome]]:
    """Run ``main(argv)`` in this process, in ``workdir``; restores sys.path and modules."""
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Outcome(code, out.out, out.err)

    yield run
    sys.modules.pop("my_factories", None)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "my_factories.py").write_text(FACTORIES)
    (tmp_path / "questions.txt").write_text(
        "# support questions\nWhat is Redis?\n\nwhat is redis\nWhere does Redis keep data?\n"
    )
    (tmp_path / "empty.txt").write_text("\n# only a comment\n\n")
    return tmp_path


@pytest.mark.slow
def test_demo_short(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_cli("demo", "--short", "--verbose", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    per_question = [line for line in text.splitlines() if " ms -> " in line]
    assert len(per_question) == 12  # --verbose: one line per question of the stream
    assert any(" miss " in line for line in per_question)
    assert "latency per stage" in text
    for row in ("retrieval", "generation", "ttft", "total", "cache"):
        assert row in text
    assert "cache hit rate:" in text and "speed-up (plain / optimized):" in text
    assert "local extractive model" in text  # the generation stage is labelled
    report = json.loads((out / "demo.json").read_text())
    plain, optimized = report["passes"]
    assert plain["label"] == "plain" and optimized["label"] == "optimized"
    assert plain["calls"] == optimized["calls"] == 12
    assert "cache" in optimized["stages"] and "cache" not in plain["stages"]
    assert report["cache"]["hits"] + report["cache"]["misses"] == 12
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_langchain_and_llamaindex_side_by_side(
    workdir: Path, cli: Callable[..., Outcome]
) -> None:
    result = cli(
        "bench", "--app", "my_factories:chain", "--app", "my_factories:engine",
        "--questions", "questions.txt", "--concurrency", "2", "--runs", "2",
        "--no-progress", "--out", "out",
    )
    assert result.returncode == 0, result.stderr
    assert "latency per stage" in result.stdout and "speed-up p50" in result.stdout
    report = json.loads((workdir / "out" / "bench.json").read_text())
    chain, engine = report["passes"]
    # the table is the first pass; the second pass is reported apart, labelled warm
    assert chain["kind"] == "LangChain runnable" and chain["calls"] == 3
    assert chain["warm"]["calls"] == 3 and chain["warm"]["label"] == "chain (warm)"
    assert "warm passes 2..2" in result.stdout
    assert {"retrieval", "generation", "ttft", "total"} <= set(chain["stages"])
    assert engine["kind"] == "LlamaIndex query engine" and engine["calls"] == 3
    assert report["isolation"] == "each app in its own process"
    assert {"retrieval", "total"} <= set(engine["stages"])
    assert (workdir / "out" / "bench.png").exists()


@pytest.mark.parametrize(
    "order", [("globally_cached", "unstreamed_chain"), ("unstreamed_chain", "globally_cached")]
)
def test_bench_measures_each_app_in_isolation(
    workdir: Path, cli: Callable[..., Outcome], order: tuple[str, str]
) -> None:
    # An app that sets the global LLM cache cannot serve the other app's calls, in either
    # order: the plain chain sees no cache lookup and calls its model for every question.
    apps = [a for name in order for a in ("--app", f"my_factories:{name}")]
    result = cli("bench", *apps, "--questions", "questions.txt", "--no-progress",
                 "--no-chart", "--out", "out")
    assert result.returncode == 0, result.stderr
    passes = {p["label"]: p for p in json.loads((workdir / "out" / "bench.json").read_text())
              ["passes"]}
    plain, cached = passes["unstreamed_chain"], passes["globally_cached"]
    assert plain["cache_lookups"] == 0 and plain["cache_hit_rate"] is None
    assert plain["stages"]["generation"]["count"] == 3
    assert cached["cache_lookups"] == 3 and cached["cache_hits"] == 1  # "what is redis"
    assert "cache" in cached["stages"]


def test_bench_cache_stage_hit_rate_and_wrong_hits(
    workdir: Path, cli: Callable[..., Outcome]
) -> None:
    # "What is Redis?" and "what is redis" are labelled as different answers: the hit
    # between them is a wrong hit, and the bench says so.
    (workdir / "expected.json").write_text(json.dumps({
        "What is Redis?": "redis-definition", "what is redis": "redis-history",
        "Where does Redis keep data?": "redis-memory",
    }))
    result = cli("bench", "--app", "my_factories:chain_cached", "--questions", "questions.txt",
                 "--expected", "expected.json", "--no-progress", "--no-chart", "--out", "out")
    assert result.returncode == 0, result.stderr
    (cached,) = json.loads((workdir / "out" / "bench.json").read_text())["passes"]
    assert cached["cache_lookups"] == 3 and cached["cache_hits"] == 1
    assert cached["hits_checked"] == {"right": 0, "wrong": 1, "unchecked": 0}
    hit = next(c for c in cached["per_call"] if c["hit"])
    assert hit["question"] == "what is redis" and hit["matched"] == "What is Redis?"
    assert "cache" in cached["stages"] and "hit rate 33%" in result.stdout
    assert "1 wrong" in result.stdout


def test_bench_plain_async_function(workdir: Path, cli: Callable[..., Outcome]) -> None:
    result = cli("bench", "--app", "my_factories:plain_function", "--questions",
                 "questions.txt", "--no-progress", "--no-chart", "--out", "o")
    assert result.returncode == 0, result.stderr
    report = json.loads((workdir / "o" / "bench.json").read_text())
    assert report["passes"][0]["stages"]["total"]["count"] == 3
    assert not (workdir / "o" / "bench.png").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--app", "my_factories", "--questions", "questions.txt"], 2,
         "--app must look like 'module:factory'"),
        (["--app", "my_factories:nope", "--questions", "questions.txt"], 2,
         "module 'my_factories' has no attribute 'nope'"),
        (["--app", "my_factories:chain", "--questions", "empty.txt"], 2,
         "has no questions"),
        (["--app", "my_factories:chain", "--questions", "missing.txt"], 2,
         "questions file not found"),
        (["--app", "my_factories:broken", "--questions", "questions.txt"], 1,
         "the factory my_factories:broken raised RuntimeError: model server not configured"),
        (["--app", "my_factories:chain", "--questions", "questions.txt", "--concurrency", "0"],
         2, "argument --concurrency: must be >= 1"),
        (["--questions", "questions.txt"], 2, "the following arguments are required: --app"),
    ],
)
def test_bench_user_mistakes(
    cli: Callable[..., Outcome], args: list[str], code: int, message: str
) -> None:
    result = cli("bench", *args, "--no-progress")
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_input_key_and_failing_pipeline(cli: Callable[..., Outcome]) -> None:
    # --input-key sends {"question": q}; the third question makes the pipeline raise.
    result = cli("bench", "--app", "my_factories:dict_chain", "--questions", "questions.txt",
                 "--input-key", "question", "--warmup", "0", "--no-progress")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "rag-optimize: error: my_factories:dict_chain: the pipeline raised ValueError on "
        "question 'Where does Redis keep data?': index unavailable"
    )


def test_demo_generation_label_without_langchain_openai(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rag_optimize_demo.chat_model import ExtractiveChatModel, make_chat_model

    monkeypatch.setenv("RAG_OPTIMIZE_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("RAG_OPTIMIZE_MODEL", "some-model")
    monkeypatch.setitem(sys.modules, "langchain_openai", None)  # not installed
    model, label = make_chat_model()
    assert isinstance(model, ExtractiveChatModel)
    assert "local extractive model" in label and "langchain-openai is not installed" in label


def test_calibrate_is_dispatched(workdir: Path, cli: Callable[..., Outcome]) -> None:
    (workdir / "pairs.tsv").write_text(
        "1\tHow do I reset my password?\thow can I reset my password\n"
        "0\tHow do I reset my password?\tWhat is the API rate limit?\n"
        "1\tWhat does error E1042 mean?\twhat is the meaning of error E1042\n"
        "0\tWhen are invoices sent?\tCan I restore a deleted project?\n"
    )
    result = cli("calibrate", "--pairs", "pairs.tsv", "--embedder", "hashing",
                 "--min-hits", "1", "--target-precision", "0.9")
    assert result.returncode == 0, result.stderr
    assert "4 pairs (2 positive)" in result.stdout and "calibrated threshold" in result.stdout
    result = cli("calibrate", "--pairs", "missing.tsv", "--embedder", "hashing")
    assert result.returncode == 2 and "missing.tsv" in result.stderr


def test_console_script_bad_module_path(workdir: Path) -> None:
    result = run_cli("bench", "--app", "no_such_module:chain", "--questions", "questions.txt",
                     cwd=workdir, script=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rag-optimize: error: cannot import module 'no_such_module' (from --app "
        "'no_such_module:chain'): no module named 'no_such_module'; run from the directory "
        "that contains it or fix PYTHONPATH"
    )


WITHOUT_ADAPTERS = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Hide(MetaPathFinder):  # as if only the core were installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("langchain_rag_optimize", "rag_optimize_demo"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    from rag_optimize.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("args", [["demo", "--short"], ["demo"], ["demo", "--verbose", "-x"]])
def test_demo_without_the_demo_package_names_what_to_install(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_ADAPTERS, *args], capture_output=True, text=True,
        timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "`pip install rag-optimize-demo`" in result.stderr
    assert "unrecognized arguments" not in result.stderr and "Traceback" not in result.stderr


def test_unknown_command_and_no_command(cli: Callable[..., Outcome]) -> None:
    result = cli("frobnicate")
    assert result.returncode == 2 and "invalid choice: 'frobnicate'" in result.stderr
    result = cli()
    assert result.returncode == 2 and "demo" in result.stdout and "bench" in result.stdout


# ---------------------------------------------------------------- cache (real Redis)
@pytest.fixture
def filled(redis_server: RedisServer) -> Iterator[str]:  # noqa: F811
    stores = []
    for namespace, n in (("cli-a", 3), ("cli-b", 2)):
        store = RedisStore(redis_server.url, namespace)
        stores.append(store)
        cache = SemanticCache(HashingEmbedder(dim=32), store=store)
        for i in range(n):
            assert cache.set(f"question number {i} about {namespace}", f"answer {i}")
    yield redis_server.url
    for store in stores:
        store.close()


def test_cache_stats_and_clear(filled: str) -> None:
    stats = run_cli("cache", "stats", "--redis", filled, "--namespace", "cli-a", "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert data["entries"] == 3 and data["namespace"] == "cli-a" and data["dimension"] == 32
    cleared = run_cli("cache", "clear", "--redis", filled, "--namespace", "cli-a")
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared 3 entries" in cleared.stdout
    for namespace, entries in (("cli-a", 0), ("cli-b", 2)):  # the other namespace is untouched
        store = RedisStore(filled, namespace)
        try:
            assert store.count() == entries
        finally:
            store.close()


def test_cache_errors(cli: Callable[..., Outcome]) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    result = cli("cache", "stats", "--redis", down, "--namespace", "x")
    assert result.returncode == 1 and "Redis cache at" in result.stderr
    result = cli("cache", "stats", "--redis", "http://nope", "--namespace", "x")
    assert result.returncode == 2 and "--redis must be a redis://" in result.stderr
    result = cli("cache", "flush", "--redis", down, "--namespace", "x")
    assert result.returncode == 2 and "invalid choice: 'flush'" in result.stderr


# ---------------------------------------------------------------- measure_pass (in-process)
async def test_measure_pass_runs_concurrently_and_keeps_per_call_stages() -> None:
    from rag_optimize import LatencyTracker
    from rag_optimize.cli.measure import measure_pass

    tracker = LatencyTracker()
    calls: list[str] = []
    inside = [0, 0]  # calls inside the retriever now, and at most
    # After the 2 warm-up calls (one at a time), the measured calls meet in fours inside the
    # retriever: run fewer than 4 at once, they never meet and time out. The peak proves no
    # more than 4 ran at once.
    meet = ameeting(4)

    async def pipeline(question: str) -> None:
        calls.append(question)
        async with tracker.span("retrieval"):
            inside[0] += 1
            inside[1] = max(inside)
            if len(calls) > 2:
                await meet()
            await asyncio.sleep(0.01)  # a fake slow retriever
            inside[0] -= 1
        tracker.first_token()

    questions = [f"q{i}" for i in range(8)]
    result = await measure_pass("p", pipeline, questions, tracker, concurrency=4, warmup=2)
    assert calls[:2] == ["q0", "q1"] and len(calls) == 10  # warm-up calls come first
    assert result.calls == 8
    assert result.stages["retrieval"].count == 8  # warm-up not in the per-call stages
    assert result.stages["ttft"].count == 8
    assert inside == [0, 4]  # 4 at once, never more
    assert result.stages["total"].p50 >= result.stages["retrieval"].p50
