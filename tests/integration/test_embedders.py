"""Tests for memstate_pg.embedders: offline, no model downloads, no database.

The OpenAI-compatible embedder is exercised against a real HTTP server on
127.0.0.1 (not a mock of httpx), so status handling, headers, JSON and retries go
through the actual transport.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from memstate_pg.embedders import (
    AsyncEmbedder,
    CallableEmbedder,
    Embedder,
    EmbeddingError,
    HashingEmbedder,
    MissingDependency,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    aembed,
    check_vectors,
    is_embedder,
)
from memstate_pg.errors import MemStateError, ValidationFailed

REPO = Path(__file__).resolve().parents[2]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # inputs are unit vectors


def norm(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --------------------------------------------------------------------------- hashing

TEXTS = ["user lives in Berlin", "where does the user live? Berlin", "favourite colour is blue"]


def test_hashing_is_deterministic_across_processes():
    here = HashingEmbedder().embed(TEXTS) + HashingEmbedder(64, seed=7).embed(TEXTS)
    out = run_python(
        f"""
        import json
        from memstate_pg.embedders import HashingEmbedder
        texts = {TEXTS!r}
        print(json.dumps(HashingEmbedder().embed(texts) + HashingEmbedder(64, seed=7).embed(texts)))
        """
    )
    assert json.loads(out) == here  # exact floats, despite a different PYTHONHASHSEED


def test_hashing_unit_norm_and_dims():
    for dim in (1, 7, 384, 1536):
        vectors = HashingEmbedder(dim).embed([*TEXTS, "", "a a a a", "Ünïcödé wörds 東京"])
        assert all(len(v) == dim for v in vectors)
        assert all(abs(norm(v) - 1.0) < 1e-9 for v in vectors)
        check_vectors(vectors, dim, count=len(TEXTS) + 3)


def test_hashing_similarity_follows_shared_words():
    home, question, colour = HashingEmbedder().embed(TEXTS)
    assert cosine(home, question) > cosine(home, colour) + 0.15
    assert cosine(home, question) > cosine(question, colour) + 0.15
    same_words = HashingEmbedder().embed(["Berlin USER lives in!"])[0]
    assert cosine(home, same_words) > 0.6  # case and punctuation do not matter
    composed, decomposed = HashingEmbedder().embed(["caf\u00e9", "cafe\u0301"])
    assert composed == decomposed


def test_hashing_empty_text_is_a_fixed_unit_vector():
    e = HashingEmbedder(32)
    empty, punct, spaces, word = e.embed(["", "?!... ---", "   \n", "word"])
    assert empty == punct == spaces
    assert any(empty) and abs(norm(empty) - 1.0) < 1e-12
    assert empty != word


def test_hashing_model_names_identify_the_space():
    assert HashingEmbedder().model == "hashing-v1-384"
    assert HashingEmbedder(128).model == "hashing-v1-128"
    assert HashingEmbedder(seed=3).model == "hashing-v1-384-s3"
    assert HashingEmbedder(ngram=(1, 3)).model == "hashing-v1-384-n1-3"
    assert HashingEmbedder(seed=3).embed(TEXTS) != HashingEmbedder().embed(TEXTS)
    assert HashingEmbedder(ngram=(1, 1)).embed(["a b"]) != HashingEmbedder().embed(["a b"])


@pytest.mark.parametrize(
    "kwargs",
    [{"dim": 0}, {"dim": 16_001}, {"dim": True}, {"dim": 3.0}, {"seed": -1}, {"ngram": (2, 1)}],
)
def test_hashing_refuses_bad_parameters(kwargs):
    with pytest.raises(ValidationFailed):
        HashingEmbedder(**kwargs)


def test_hashing_refuses_a_bare_string_and_non_strings():
    with pytest.raises(ValidationFailed, match="not a single string"):
        HashingEmbedder().embed("hello")
    with pytest.raises(ValidationFailed):
        HashingEmbedder().embed(["ok", 3])  # type: ignore[list-item]
    assert HashingEmbedder().embed([]) == []


def test_hashing_is_fast():
    e = HashingEmbedder()
    texts = [f"fact {i}: user {i % 13} prefers item {i * 7919 % 1000}" for i in range(1000)]
    start = time.perf_counter()
    vectors = e.embed(texts)
    elapsed = time.perf_counter() - start
    assert len(vectors) == 1000
    assert elapsed < 0.5, f"1000 texts took {elapsed * 1000:.0f} ms"  # typically ~30 ms


def test_embedders_satisfy_the_protocols():
    e = HashingEmbedder()
    assert isinstance(e, Embedder) and is_embedder(e)
    assert isinstance(OpenAIEmbedder(api_key="k"), AsyncEmbedder)
    lazy = SentenceTransformerEmbedder("never-loaded")
    assert is_embedder(lazy)  # does not load the model
    assert lazy._model_obj is None
    assert not is_embedder(object())


def test_import_needs_no_optional_dependency():
    run_python(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {"httpx", "sentence_transformers", "torch"}:
                    raise ImportError(f"blocked {name}")

        sys.meta_path.insert(0, Block())
        from memstate_pg.embedders import (
            HashingEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder, MissingDependency)
        assert HashingEmbedder().embed(["works offline"])
        OpenAIEmbedder(api_key="k")
        st = SentenceTransformerEmbedder()
        try:
            st.embed(["x"])
        except MissingDependency:
            pass
        else:
            raise SystemExit("expected MissingDependency")
        """
    )


# --------------------------------------------------------------------------- check_vectors


def test_check_vectors_accepts_numbers():
    check_vectors([[0.0, 1, -2.5]], 3, count=1)
    check_vectors([(1.0, 2.0)], 2)
    check_vectors([], 4, count=0)
    np = pytest.importorskip("numpy")
    check_vectors(np.ones((2, 3), dtype=np.float32), 3, count=2)
    check_vectors([np.zeros(3)], 3)


@pytest.mark.parametrize(
    ("vectors", "dim", "count", "needle"),
    [
        ([[1.0, float("nan")]], 2, None, "NaN"),
        ([[float("inf"), 0.0]], 2, None, "infinite"),
        ([[0.0, float("-inf")]], 2, None, "infinite"),
        ([[1e39, 0.0]], 2, None, "float4"),
        ([[1.0, 2.0, 3.0]], 2, None, "3 dimensions, expected 2"),
        ([[1.0]], 1, 2, "expected 2 vectors, got 1"),
        ([[1.0], [2.0]], 1, 1, "expected 1 vectors, got 2"),
        ([["1.0", 2.0]], 2, None, "str"),
        ([[None, 2.0]], 2, None, "NoneType"),
        ([[True, 2.0]], 2, None, "bool"),
        (["ab"], 2, None, "vector 0 must be a sequence"),
        ([1.0, 2.0], 2, None, "vector 0 must be a sequence"),
        ("not vectors", 2, None, "sequence of vectors"),
        (None, 2, None, "sequence of vectors"),
        ([[1.0]], 0, None, "dim"),
    ],
)
def test_check_vectors_refusals(vectors, dim, count, needle):
    with pytest.raises(ValidationFailed, match=needle) as info:
        check_vectors(vectors, dim, count=count)
    assert isinstance(info.value, MemStateError)


def test_check_vectors_refusal_reports_position():
    with pytest.raises(ValidationFailed) as info:
        check_vectors([[0.0, 0.0], [0.0, float("nan")]], 2)
    assert info.value.errors[0]["index"] == 1 and info.value.errors[0]["position"] == 1


# --------------------------------------------------------------------------- aembed


class ThreadRecordingEmbedder:
    model = "thread-recorder"
    dim = 2

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.threads: list[int] = []

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        return [[1.0, 0.0] for _ in texts]


def test_aembed_runs_sync_embedders_off_the_loop_thread():
    e = ThreadRecordingEmbedder(delay=0.2)
    ticks = 0

    async def heartbeat(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> tuple[int, list[list[float]]]:
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop))
        vectors = await aembed(e, ["a", "b"])
        stop.set()
        await beat
        return threading.get_ident(), vectors

    loop_thread, vectors = asyncio.run(main())
    assert vectors == [[1.0, 0.0], [1.0, 0.0]]
    assert e.threads and e.threads[0] != loop_thread
    assert ticks >= 5  # the loop kept running while embed slept


def test_aembed_prefers_a_native_coroutine():
    class Native(ThreadRecordingEmbedder):
        async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
            self.threads.append(-1)
            return [[0.0, 1.0] for _ in texts]

    e = Native()
    assert asyncio.run(aembed(e, ["x"])) == [[0.0, 1.0]]
    assert e.threads == [-1]
    assert asyncio.run(aembed(e, [])) == []
    with pytest.raises(ValidationFailed):
        asyncio.run(aembed(e, "bare string"))


# --------------------------------------------------------------------------- callable


def test_callable_embedder_sync_and_async_functions():
    def sync_fn(texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    async def async_fn(texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(0)
        return [[float(len(t)), 2.0] for t in texts]

    s = CallableEmbedder(sync_fn, dim=2, model="len-v1")
    a = CallableEmbedder(async_fn, dim=2, model="len-v2")
    assert (s.model, s.dim) == ("len-v1", 2)
    assert s.embed(["ab", "c"]) == [[2.0, 1.0], [1.0, 1.0]]
    assert a.embed(["ab"]) == [[2.0, 2.0]]
    assert asyncio.run(aembed(s, ["abc"])) == [[3.0, 1.0]]
    assert asyncio.run(aembed(a, ["abc"])) == [[3.0, 2.0]]

    async def sync_call_inside_a_loop() -> list[list[float]]:
        return a.embed(["x"])  # must not trip over "asyncio.run() cannot be called..."

    assert asyncio.run(sync_call_inside_a_loop()) == [[1.0, 2.0]]


def test_callable_embedder_checks_the_function_output():
    np = pytest.importorskip("numpy")
    ok = CallableEmbedder(lambda texts: np.ones((len(texts), 3)), dim=3, model="np")
    assert ok.embed(["a", "b"]) == [[1.0, 1.0, 1.0]] * 2
    wrong_dim = CallableEmbedder(lambda texts: [[1.0] for _ in texts], dim=3, model="bad")
    with pytest.raises(EmbeddingError, match="1 dimensions, expected 3"):
        wrong_dim.embed(["a"])
    too_few = CallableEmbedder(lambda texts: [], dim=1, model="bad")
    with pytest.raises(EmbeddingError, match="expected 2 vectors"):
        too_few.embed(["a", "b"])
    with pytest.raises(EmbeddingError, match="NaN"):
        CallableEmbedder(lambda t: [[float("nan")]], dim=1, model="nan").embed(["a"])


@pytest.mark.parametrize("model", ["", "   ", "x" * 101, None])
def test_model_names_must_be_short_and_non_empty(model):
    with pytest.raises(ValidationFailed):
        CallableEmbedder(lambda t: t, dim=1, model=model)  # type: ignore[arg-type]
    CallableEmbedder(lambda t: t, dim=1, model="x" * 100)


# --------------------------------------------------------------------------- sentence-transformers


class FakeSentenceModel:
    """Stands in for a SentenceTransformer: same methods, no torch, no download."""

    def __init__(self, name: str = "fake", dim: int = 4, **kwargs: Any):
        self.name, self._dim, self.init_kwargs = name, dim, kwargs
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        import numpy as np

        self.calls.append((list(texts), kwargs))
        return np.array(
            [[float(len(t))] + [0.5] * (self._dim - 1) for t in texts], dtype=np.float32
        )


def test_sentence_transformer_with_injected_model(monkeypatch):
    pytest.importorskip("numpy")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # must not be needed
    fake = FakeSentenceModel(dim=4)
    e = SentenceTransformerEmbedder("fake-mini", model=fake)
    assert (e.model, e.dim) == ("fake-mini", 4)
    assert e.embed(["abc", "de"]) == [[3.0, 0.5, 0.5, 0.5], [2.0, 0.5, 0.5, 0.5]]
    texts, kwargs = fake.calls[0]
    assert texts == ["abc", "de"] and kwargs["normalize_embeddings"] is True
    assert e.embed([]) == [] and len(fake.calls) == 1
    assert asyncio.run(aembed(e, ["x"])) == [[1.0, 0.5, 0.5, 0.5]]
    custom = SentenceTransformerEmbedder("fake", model=fake, model_id="st/fake@v2", normalize=False)
    custom.embed(["a"])
    assert custom.model == "st/fake@v2" and fake.calls[-1][1]["normalize_embeddings"] is False


def test_sentence_transformer_loads_lazily_once(monkeypatch):
    pytest.importorskip("numpy")
    built: list[FakeSentenceModel] = []

    def factory(name: str, **kwargs: Any) -> FakeSentenceModel:
        built.append(FakeSentenceModel(name, dim=3, **kwargs))
        return built[-1]

    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = factory  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)

    e = SentenceTransformerEmbedder("tiny", device="cpu", trust_remote_code=False)
    assert built == []  # construction does not load
    declared = SentenceTransformerEmbedder("tiny", dim=3)
    assert declared.dim == 3 and built == []  # a declared dim does not load either
    assert e.dim == 3 and len(built) == 1
    assert built[0].name == "tiny"
    assert built[0].init_kwargs == {"device": "cpu", "trust_remote_code": False}
    e.embed(["a"])
    e.embed(["b"])
    assert len(built) == 1
    SentenceTransformerEmbedder("tiny", eager=True)
    assert len(built) == 2
    with pytest.raises(EmbeddingError, match="dim=5 was declared"):
        SentenceTransformerEmbedder("tiny", dim=5).embed(["a"])


def test_sentence_transformer_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    e = SentenceTransformerEmbedder()  # still fine: nothing loaded yet
    for action in (lambda: e.embed(["x"]), lambda: e.dim):
        with pytest.raises(MissingDependency) as info:
            action()
        assert 'pip install "memstate-pg[sentence-transformers]"' in str(info.value)
        assert isinstance(info.value, ImportError) and isinstance(info.value, MemStateError)
    with pytest.raises(MissingDependency):
        SentenceTransformerEmbedder(eager=True)


# --------------------------------------------------------------------------- OpenAI-compatible

Reply = tuple[int, Any, dict[str, str]]


def echo_reply(body: dict[str, Any]) -> Reply:
    """Vector i = [len(text), i, 1, 0...] (``dimensions`` long), listed in reverse order."""
    dims = body.get("dimensions", 3)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": [float(len(t)), float(i), 1.0] + [0.0] * (dims - 3),
        }
        for i, t in enumerate(body["input"])
    ]
    return 200, {"object": "list", "data": data[::-1], "model": body["model"]}, {}


class EmbeddingServer:
    """A real HTTP server on 127.0.0.1 that replays scripted replies, then echoes."""

    MAX_REQUESTS = 50

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Callable[[dict[str, Any]], Reply]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if len(server.requests) > server.MAX_REQUESTS:
                    status, payload, headers = 418, {"error": "request budget exhausted"}, {}
                else:
                    reply = server.script.pop(0) if server.script else echo_reply
                    status, payload, headers = reply(body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def then(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.script.append(lambda body: (status, payload, headers or {}))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = EmbeddingServer()
    yield srv
    srv.stop()


def make(server: EmbeddingServer, **kwargs: Any) -> OpenAIEmbedder:
    kwargs.setdefault("api_key", "sk-test")
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 5)
    return OpenAIEmbedder(base_url=server.base_url, **kwargs)


def test_openai_orders_by_index_and_sends_auth(server):
    with make(server, model="local-model", dim=3, send_dimensions=False) as e:
        vectors = e.embed(["a", "bbb", "cc"])
    assert vectors == [[1.0, 0.0, 1.0], [3.0, 1.0, 1.0], [2.0, 2.0, 1.0]]  # server sent reversed
    (req,) = server.requests
    assert req["path"] == "/v1/embeddings"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["body"] == {"model": "local-model", "input": ["a", "bbb", "cc"]}
    assert e.model == "local-model"


def test_openai_sends_dimensions_when_dim_given(server):
    e = make(server, dim=8)
    assert e.model == "text-embedding-3-small@8"
    assert e.embed(["hello"]) == [[5.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    assert server.requests[0]["body"]["dimensions"] == 8
    native = make(server)
    assert native.dim == 1536 and native.model == "text-embedding-3-small"
    assert len(server.requests) == 1  # a known model's size needs no request


def test_openai_api_key_from_env_or_none(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    make(server, api_key=None, model="m", dim=3, send_dimensions=False).embed(["a"])
    monkeypatch.delenv("OPENAI_API_KEY")
    make(server, api_key=None, model="m", dim=3, send_dimensions=False).embed(["a"])
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-env"
    assert "Authorization" not in server.requests[1]["headers"]
    assert "sk-env" not in repr(make(server, api_key="sk-env"))


def test_openai_retries_a_500_then_succeeds(server):
    server.then(500, {"error": {"message": "upstream hiccup"}})
    server.then(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    e = make(server, model="m", dim=3, send_dimensions=False)
    assert e.embed(["ab"]) == [[2.0, 0.0, 1.0]]
    assert len(server.requests) == 3


def test_openai_surfaces_the_server_message(server):
    server.then(400, {"error": {"message": "model 'nope' does not exist", "type": "invalid"}})
    e = make(server, model="nope", dim=3)
    with pytest.raises(EmbeddingError, match="model 'nope' does not exist") as info:
        e.embed(["a"])
    assert info.value.status_code == 400
    assert len(server.requests) == 1  # a 4xx is not retried


def test_openai_gives_up_after_max_retries(server):
    for _ in range(3):
        server.then(503, b"overloaded, try later")
    e = make(server, model="m", dim=3, max_retries=2)
    with pytest.raises(EmbeddingError, match="HTTP 503: overloaded, try later"):
        e.embed(["a"])
    assert len(server.requests) == 3


def test_openai_batches_and_learns_unknown_dim(server):
    e = make(server, model="custom", batch_size=2)
    vectors = e.embed(["a", "bb", "ccc", "dddd", "eeeee"])
    assert [v[0] for v in vectors] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["body"]["input"] for r in server.requests] == [
        ["a", "bb"],
        ["ccc", "dddd"],
        ["eeeee"],
    ]
    assert e.dim == 3 and len(server.requests) == 3
    probe = make(server, model="custom")
    assert probe.dim == 3 and len(server.requests) == 4  # one probe request


def test_openai_rejects_malformed_responses(server):
    server.then(200, {"data": [{"index": 0, "embedding": [1.0, 2.0, 3.0]}]})
    server.then(200, {"unexpected": True})
    server.then(200, {"data": [{"index": 0, "embedding": [1.0, float("nan"), 3.0]}]})
    e = make(server, model="m", dim=3, send_dimensions=False)
    with pytest.raises(EmbeddingError, match="1 embeddings"):
        e.embed(["a", "b"])
    with pytest.raises(EmbeddingError, match="malformed"):
        e.embed(["a"])
    with pytest.raises(EmbeddingError, match="NaN"):
        e.embed(["a"])
    with pytest.raises(EmbeddingError, match="dimensions, expected 4"):
        make(server, model="m", dim=4, send_dimensions=False).embed(["a"])


def test_openai_connection_refused_is_an_embedding_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = OpenAIEmbedder("m", base_url=f"http://127.0.0.1:{port}/v1", dim=3, max_retries=1, backoff=0)
    with pytest.raises(EmbeddingError, match="after 2 attempts"):
        e.embed(["a"])


def test_openai_async_path(server):
    e = make(server, model="m", dim=6)

    async def main() -> list[list[float]]:
        server.then(502, {"error": "bad gateway"})
        vectors = await aembed(e, ["xy", "z"])  # 502, retried, then echoed
        server.then(400, {"error": {"message": "input too long"}})
        with pytest.raises(EmbeddingError, match="input too long") as info:
            await e.aembed(["a"])
        assert info.value.status_code == 400
        return vectors

    assert asyncio.run(main()) == [[2.0, 0.0, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    assert [r["body"].get("dimensions") for r in server.requests] == [6, 6, 6]
    assert all(r["headers"]["Authorization"] == "Bearer sk-test" for r in server.requests)
    assert asyncio.run(e.aembed([])) == [] and len(server.requests) == 3


def test_openai_missing_httpx(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx", None)
    e = OpenAIEmbedder(api_key="k")  # construction needs no httpx
    with pytest.raises(MissingDependency, match=r'pip install "memstate-pg\[openai\]"'):
        e.embed(["a"])
