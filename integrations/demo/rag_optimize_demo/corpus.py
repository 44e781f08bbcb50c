"""The demo's document set: short explanatory passages on software, RAG and operations.

Written for this package (not copied from anywhere). Each topic gives three passages (what
it is, how it is used, what to watch out for); a generated runbook adds one passage per
service and symptom. About 330 passages in all, each with a ``topic`` and ``kind`` in its
metadata, which is what the question stream asks about.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    what: str
    use: str
    pitfall: str


TOPICS: tuple[Topic, ...] = (
    Topic(
        "semantic cache",
        "A semantic cache stores answers keyed by the meaning of a question, so a paraphrase "
        "of an earlier question is answered from the cache instead of calling the model again.",
        "Embed the incoming question, find the nearest stored question, and return its answer "
        "when the cosine similarity is above a threshold such as 0.9.",
        "A threshold that is too low returns answers to questions that were only similar; "
        "scope entries by tenant and model so users never see each other's answers.",
    ),
    Topic(
        "cosine similarity",
        "Cosine similarity measures the angle between two vectors; for unit-length vectors it "
        "equals their dot product and ranges from -1 to 1.",
        "Normalise embeddings once when they are stored, then a whole matrix of candidates is "
        "scored with one matrix-vector product.",
        "Comparing vectors from two different embedding models gives meaningless scores, even "
        "when the dimensions happen to match.",
    ),
    Topic(
        "embedding model",
        "An embedding model turns text into a fixed-length vector so that texts with similar "
        "meaning end up close together.",
        "Small sentence models such as MiniLM produce 384-dimensional vectors and run on a CPU "
        "in a few milliseconds per sentence.",
        "Inputs longer than the model's token limit are cut, so long documents must be split "
        "into chunks before embedding.",
    ),
    Topic(
        "BM25",
        "BM25 is a keyword ranking function that scores documents by term frequency, inverse "
        "document frequency and document length.",
        "Use BM25 for exact terms such as error codes, product names and identifiers that "
        "embedding models tend to blur.",
        "BM25 knows nothing about synonyms; a query that uses different words than the "
        "document scores zero.",
    ),
    Topic(
        "hybrid retrieval",
        "Hybrid retrieval combines keyword search and vector search and fuses their rankings "
        "into one list.",
        "Run the keyword and the dense search concurrently and fuse them with reciprocal rank "
        "fusion, which needs no score calibration.",
        "Running the two searches one after the other doubles retrieval latency for no gain.",
    ),
    Topic(
        "reciprocal rank fusion",
        "Reciprocal rank fusion scores each document by the sum of one over a constant plus "
        "its rank in every result list.",
        "A constant of 60 is the common default; documents found by several retrievers rise "
        "to the top.",
        "Fusion cannot recover a document that no retriever returned in its candidate list, "
        "so ask each branch for enough candidates.",
    ),
    Topic(
        "reranking",
        "A reranker reads the query and each candidate document together and scores their "
        "relevance more precisely than the first-stage retriever.",
        "Rerank only the top few dozen fused candidates, because cross-encoders and rerank "
        "APIs cost time per document.",
        "A rerank API call adds network latency; give it a timeout and fall back to the "
        "fused order when it fails.",
    ),
    Topic(
        "chunking",
        "Chunking splits long documents into passages small enough to embed and to fit in "
        "the model's context.",
        "Chunks of a few hundred tokens with a small overlap keep sentences that belong "
        "together in the same passage.",
        "Chunks that are too large dilute the embedding; chunks that are too small lose the "
        "context needed to answer.",
    ),
    Topic(
        "context window",
        "The context window is the maximum number of tokens a language model can read in "
        "one request, prompt and retrieved passages included.",
        "Pack the highest-ranked passages first and stop when the token budget is reached.",
        "Filling the window with marginal passages raises cost and latency and can push the "
        "useful passage out of the model's attention.",
    ),
    Topic(
        "time to first token",
        "Time to first token is how long a user waits before the first word of the answer appears.",
        "Stream the answer token by token so users start reading while the model is still "
        "generating.",
        "A fast average hides slow tails; report the 95th and 99th percentile of time to "
        "first token, not only the mean.",
    ),
    Topic(
        "server-sent events",
        "Server-sent events are a simple HTTP format in which the server pushes text events "
        "over one long-lived response.",
        "Send one data line per token, a final done marker, and comment lines as heartbeats "
        "so proxies do not close an idle connection.",
        "When the client disconnects, cancel the generation, or the server keeps paying for "
        "tokens nobody reads.",
    ),
    Topic(
        "percentile latency",
        "A latency percentile such as p95 is the value below which 95 percent of requests "
        "complete.",
        "Interpolate between the two nearest samples so small samples give stable percentiles.",
        "Averaging percentiles from several servers gives a wrong number; merge the raw "
        "samples or histograms instead.",
    ),
    Topic(
        "request batching",
        "Request batching groups many small concurrent requests into one larger call to a "
        "model that is faster per item in batches.",
        "Wait a few milliseconds for more requests, then send the batch when it is full or "
        "the wait is over.",
        "An unbounded queue turns a traffic spike into memory exhaustion; bound the queue "
        "and apply backpressure.",
    ),
    Topic(
        "Redis",
        "Redis is an in-memory data store often used as a shared cache between processes and "
        "machines.",
        "Store cache entries as hashes with a time-to-live and keep a namespace prefix per "
        "application.",
        "Never unpickle data read from Redis; a compromised cache would then run arbitrary "
        "code in every client.",
    ),
    Topic(
        "time to live",
        "A time to live is the number of seconds after which a cache entry expires and is no "
        "longer served.",
        "Choose the lifetime from how fast the underlying documents change: minutes for "
        "prices, days for manuals.",
        "Entries that never expire keep serving answers about documents that were deleted or "
        "changed.",
    ),
    Topic(
        "LRU eviction",
        "Least-recently-used eviction removes the entry that has not been read for the "
        "longest time when the cache is full.",
        "An ordered dictionary gives constant-time moves to the end on every hit and "
        "constant-time removal from the front.",
        "Scanning all entries to find the oldest one makes every insert slower as the cache grows.",
    ),
    Topic(
        "vector quantization",
        "Vector quantization stores embeddings in fewer bits, for example int8 or binary "
        "codes, to save memory and speed up search.",
        "Search the compressed codes first and rescore the best candidates with the full "
        "float vectors.",
        "Binary codes alone lose recall; always measure recall against exact search before "
        "switching.",
    ),
    Topic(
        "approximate nearest neighbour search",
        "Approximate nearest neighbour search finds vectors close to a query without "
        "comparing it to every stored vector.",
        "Graph indexes such as HNSW answer in well under a millisecond at millions of vectors.",
        "For a few thousand vectors an exact matrix product is as fast and has perfect recall.",
    ),
    Topic(
        "LangChain",
        "LangChain is a framework for composing language-model applications from runnables "
        "such as prompts, models, retrievers and parsers.",
        "The pipe operator builds a chain, and every chain supports invoke, batch, stream "
        "and their async versions.",
        "Callbacks are the way to observe a chain; a handler passed in the config sees "
        "every nested run.",
    ),
    Topic(
        "LlamaIndex",
        "LlamaIndex is a framework for building retrieval applications around indexes, "
        "retrievers and query engines.",
        "A vector store index turns documents into nodes and answers questions through a "
        "query engine.",
        "Streaming query engines call the model only when the caller iterates the response stream.",
    ),
    Topic(
        "prompt template",
        "A prompt template is text with placeholders that are filled with the question and "
        "the retrieved context before calling the model.",
        "Keep instructions in the system message and put the question last so the model "
        "reads the context first.",
        "Changing the template changes every answer; include a template version in the cache key.",
    ),
    Topic(
        "asyncio",
        "Asyncio is Python's library for running many waiting operations concurrently in "
        "one thread with an event loop.",
        "Use asyncio.gather to run independent network calls at the same time.",
        "A blocking call such as a CPU-heavy model inside a coroutine stalls every other "
        "request; run it in a worker thread.",
    ),
    Topic(
        "thread pool",
        "A thread pool keeps a fixed number of worker threads ready to run tasks handed to it.",
        "Numerical libraries release the global interpreter lock, so model inference in "
        "threads can overlap.",
        "Too many threads on a small machine add context switches and make every task slower.",
    ),
    Topic(
        "rate limiting",
        "Rate limiting caps how many requests a client may send in a period of time.",
        "A token bucket refills at a steady rate and allows short bursts up to its size.",
        "Retrying immediately after a rate-limit error makes the overload worse; back off "
        "exponentially with jitter.",
    ),
    Topic(
        "exponential backoff",
        "Exponential backoff waits longer after each failed attempt, doubling the delay up "
        "to a maximum.",
        "Add random jitter so many clients do not retry at exactly the same moment.",
        "Retrying requests that are not idempotent can apply the same change twice.",
    ),
    Topic(
        "circuit breaker",
        "A circuit breaker stops calling a failing dependency for a while after too many "
        "errors, and tries again later.",
        "Open the circuit after a burst of failures, then let a single trial request through "
        "before closing it.",
        "Without a fallback, an open circuit only turns slow failures into fast ones.",
    ),
    Topic(
        "observability",
        "Observability is the ability to understand what a system is doing from its logs, "
        "metrics and traces.",
        "Record per-stage latency of each request so a slow retriever is told apart from a "
        "slow model.",
        "High-cardinality labels such as user ids explode the number of metric series.",
    ),
    Topic(
        "Prometheus",
        "Prometheus is a monitoring system that scrapes metrics over HTTP and stores them as "
        "time series.",
        "Expose request latency as a histogram so percentiles can be computed across instances.",
        "Summaries computed inside each process cannot be aggregated across processes.",
    ),
    Topic(
        "OpenTelemetry",
        "OpenTelemetry is a vendor-neutral standard for traces, metrics and logs.",
        "Create one span per pipeline stage, nested under a span for the whole request.",
        "Sampling too aggressively hides the rare slow requests that traces are most useful for.",
    ),
    Topic(
        "Docker",
        "Docker packages an application and its dependencies into an image that runs the "
        "same way on any host.",
        "Copy the dependency list first and install it before copying the source so the "
        "layer cache is reused.",
        "Running containers as root makes a compromised process far more dangerous.",
    ),
    Topic(
        "Kubernetes",
        "Kubernetes schedules containers across a cluster and restarts them when they fail.",
        "Readiness probes keep traffic away from a pod until its model is loaded.",
        "Missing resource requests let one pod starve the others on the same node.",
    ),
    Topic(
        "load balancer",
        "A load balancer spreads incoming requests across several servers.",
        "Least-connections balancing suits streaming responses that hold connections open "
        "for seconds.",
        "An idle timeout shorter than the longest answer cuts streams in the middle; send "
        "heartbeats.",
    ),
    Topic(
        "connection pooling",
        "Connection pooling reuses open network connections instead of opening a new one "
        "for every request.",
        "Create one client per process and share it, so the TLS handshake happens once.",
        "A pool smaller than the concurrency makes requests queue for a free connection.",
    ),
    Topic(
        "Python virtual environment",
        "A virtual environment is an isolated directory with its own Python packages.",
        "Create it with python -m venv .venv and install the project in editable mode.",
        "Installing packages globally leads to version conflicts between projects.",
    ),
    Topic(
        "type hints",
        "Type hints annotate Python functions with the types of their arguments and results.",
        "Run mypy in continuous integration to catch wrong calls before they reach production.",
        "Hints are not checked at run time; validate untrusted input explicitly.",
    ),
    Topic(
        "unit testing",
        "A unit test checks one small piece of code in isolation with known inputs.",
        "Inject the clock so tests of expiry and timeouts run instantly without sleeping.",
        "Tests that assert exact timings fail randomly on busy machines; use generous bounds.",
    ),
    Topic(
        "property-based testing",
        "Property-based testing generates many random inputs and checks that a property "
        "holds for all of them.",
        "Hypothesis shrinks a failing input to the smallest example that still fails.",
        "A property that restates the implementation tests nothing; state what must be true.",
    ),
    Topic(
        "continuous integration",
        "Continuous integration runs the build and the tests on every change pushed to the "
        "repository.",
        "Run the linter, the type checker and the test suite with one command so developers "
        "can run the same locally.",
        "A slow pipeline is skipped by developers; keep the default suite fast.",
    ),
    Topic(
        "git",
        "Git is a distributed version control system that records snapshots of a project.",
        "Commit small, working steps with messages that say what changed and why.",
        "Rewriting history that others have pulled forces them to repair their clones.",
    ),
    Topic(
        "semantic versioning",
        "Semantic versioning numbers releases as major, minor and patch.",
        "Increase the major version when a public interface changes incompatibly.",
        "Depending on an unpinned major version lets a breaking release into production.",
    ),
    Topic(
        "JSON",
        "JSON is a text format for structured data made of objects, arrays, strings, numbers, "
        "booleans and null.",
        "Store cache entries as JSON so any process and language can read them safely.",
        "Floating-point values lose precision and NaN is not valid JSON.",
    ),
    Topic(
        "HTTP caching",
        "HTTP caching lets clients and proxies reuse responses according to headers such as "
        "Cache-Control and ETag.",
        "Mark personalised responses as private so shared proxies never store them.",
        "Caching an event stream breaks streaming; send Cache-Control no-cache.",
    ),
    Topic(
        "tokenization",
        "Tokenization splits text into the units a model reads, usually sub-word pieces.",
        "Count tokens with the model's own tokenizer to stay inside the context window.",
        "Estimating tokens from characters is only rough, especially for code and non-English "
        "text.",
    ),
    Topic(
        "hallucination",
        "A hallucination is an answer that sounds plausible but is not supported by the sources.",
        "Ground answers in retrieved passages and ask the model to say when the context does "
        "not contain the answer.",
        "A cache can spread one wrong answer to many users; let feedback invalidate entries.",
    ),
    Topic(
        "cache invalidation",
        "Cache invalidation removes entries whose answers are no longer correct.",
        "Record which source documents an answer used, and drop those entries when a "
        "document changes.",
        "Clearing the whole cache on every update throws away every hit you earned.",
    ),
    Topic(
        "multi-tenancy",
        "Multi-tenancy means one deployment serves several customers whose data must stay "
        "separate.",
        "Put the tenant identifier into every cache scope and every retrieval filter.",
        "A shared cache without scopes leaks one tenant's answers to another.",
    ),
    Topic(
        "cold start",
        "A cold start is the extra latency of the first request after a process starts, "
        "while models load and caches are empty.",
        "Warm the model up with one request before the service reports itself ready.",
        "Benchmarks that include the first call measure the cold start, not steady-state latency.",
    ),
    Topic(
        "throughput",
        "Throughput is how many requests a system completes per second.",
        "Batching and concurrency raise throughput even when single-request latency stays "
        "the same.",
        "Pushing throughput past the saturation point makes latency grow without bound.",
    ),
    Topic(
        "backpressure",
        "Backpressure is a way for a busy component to slow down its producers instead of "
        "buffering without limit.",
        "Reject or delay new work when the queue is full and tell the caller to retry.",
        "Silently dropping work hides overload until users complain.",
    ),
    Topic(
        "idempotency",
        "An idempotent operation gives the same result when it is applied once or many times.",
        "Attach an idempotency key to writes so a retried request is recognised.",
        "Generating the key on each retry defeats its purpose.",
    ),
    Topic(
        "feature flag",
        "A feature flag switches behaviour on or off at run time without a new deployment.",
        "Roll the semantic cache out to a small share of traffic first and compare answer quality.",
        "Old flags that are never removed make the code hard to follow.",
    ),
    Topic(
        "A/B testing",
        "A/B testing sends two variants to comparable groups of users and compares an outcome.",
        "Decide the metric and the sample size before the test starts.",
        "Stopping the test as soon as the difference looks significant inflates false positives.",
    ),
    Topic(
        "data privacy",
        "Data privacy is about collecting, storing and sharing personal data only as permitted.",
        "Do not cache answers that contain personal data, or scope them to the user.",
        "Logs often leak personal data that was never meant to be stored.",
    ),
    Topic(
        "latency budget",
        "A latency budget splits the target response time of a request among its stages.",
        "Give retrieval, reranking and the model each a share and a timeout.",
        "Without per-stage timeouts one slow dependency consumes the whole budget.",
    ),
    Topic(
        "query rewriting",
        "Query rewriting turns a user's question into one or more search queries that "
        "retrieve better.",
        "Expand acronyms and add the product name before searching.",
        "Every rewrite is an extra model call; cache rewrites like answers.",
    ),
    Topic(
        "metadata filtering",
        "Metadata filtering restricts retrieval to documents whose fields match, such as a "
        "product version or language.",
        "Apply the filter inside the index search, not after it, so enough results remain.",
        "A cache shared across filters must include the filter in the scope.",
    ),
    Topic(
        "evaluation set",
        "An evaluation set is a fixed list of questions with known good answers or relevant "
        "documents.",
        "Measure retrieval recall and answer quality on it before and after every change.",
        "An evaluation set that is too small makes noise look like progress.",
    ),
    Topic(
        "recall at k",
        "Recall at k is the fraction of relevant documents that appear among the top k results.",
        "Compare recall at 10 of hybrid and dense retrieval on your own questions.",
        "Recall ignores order; pair it with a rank-aware metric such as nDCG.",
    ),
    Topic(
        "nDCG",
        "Normalised discounted cumulative gain scores a ranking by how high the relevant "
        "documents appear.",
        "Report nDCG at 10 for retrieval experiments, as the BEIR benchmark does.",
        "Graded relevance labels change the score; keep the labelling consistent.",
    ),
)

SERVICES = (
    "api-gateway",
    "auth-service",
    "search-service",
    "embedding-worker",
    "vector-db",
    "redis-cache",
    "llm-proxy",
    "ingest-pipeline",
    "billing-service",
    "notification-service",
    "web-frontend",
)

SYMPTOMS = (
    (
        "returns HTTP 503",
        "check that its pods are ready and that the upstream it calls is healthy; scale out if "
        "the queue is full",
    ),
    (
        "has high p99 latency",
        "look at the per-stage latency breakdown, then at garbage collection pauses and "
        "saturated connection pools",
    ),
    (
        "runs out of memory",
        "check for unbounded queues and caches, lower the batch size, and set memory limits "
        "that match the model size",
    ),
    (
        "shows a rising error rate",
        "compare the error start time with the last deployment and roll back if they match",
    ),
    (
        "has a slow cold start",
        "preload the model at start-up and mark the instance ready only after a warm-up request",
    ),
    (
        "loses connections",
        "raise the load balancer idle timeout above the longest request and send heartbeats "
        "on streams",
    ),
    ("fills its disk", "rotate logs, remove old index snapshots and alert at 80 percent usage"),
    (
        "is rate limited by a provider",
        "retry with exponential backoff and jitter, and cache repeated requests",
    ),
    (
        "serves stale answers",
        "invalidate the cache entries of the changed documents and shorten the time to live",
    ),
    (
        "uses too much CPU",
        "profile it, batch model calls, and cap the number of inference threads per core",
    ),
)


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    topic: str
    kind: str


def passages() -> list[Passage]:
    """Every passage of the demo corpus, in a fixed order."""
    out: list[Passage] = []
    for i, topic in enumerate(TOPICS):
        for kind, text in (("what", topic.what), ("use", topic.use), ("pitfall", topic.pitfall)):
            out.append(
                Passage(f"t{i:02d}-{kind}", f"{_title(topic.name)}: {text}", topic.name, kind)
            )
    for s, service in enumerate(SERVICES):
        for k, (symptom, action) in enumerate(SYMPTOMS):
            text = (
                f"Runbook for {service}: when {service} {symptom}, {action}. Page the "
                f"{service} on-call owner if it lasts more than ten minutes."
            )
            out.append(Passage(f"rb-{s:02d}-{k:02d}", text, service, "runbook"))
    return out


def _title(name: str) -> str:
    return name[0].upper() + name[1:]
