"""Embeddings from any OpenAI-compatible ``POST /embeddings`` endpoint, over httpx.

Works with OpenAI itself and with compatible servers (vLLM, Ollama, LiteLLM,
llama.cpp, TEI...). httpx is imported on first use, so the ``openai`` extra is
only needed by those who use this class. Both a blocking ``embed`` and a native
``aembed`` are provided: the async path keeps the event loop free while the
request is in flight without spending a worker thread on it.

Transient failures (429, 5xx, connection errors, timeouts) are retried with
exponential backoff, honouring ``Retry-After``; anything else fails at once with
the server's own error message in an :class:`EmbeddingError`.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memstate_pg.embedders.base import (
    EmbeddingError,
    coerce_texts,
    coerce_vectors,
    import_optional,
    validate_dim,
    validate_model_name,
)
from memstate_pg.errors import ValidationFailed

if TYPE_CHECKING:
    import httpx

__all__ = ["KNOWN_DIMS", "OpenAIEmbedder"]

KNOWN_DIMS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
"""Native output sizes, so ``dim`` needs no request for OpenAI's own models."""

_MAX_RETRY_AFTER = 60.0


def _httpx() -> Any:
    return import_optional("httpx", extra="openai")


class OpenAIEmbedder:
    """Embed through an OpenAI-compatible HTTP API.

    ``dim``: when given (and different from the model's known native size) it is sent
    as ``dimensions`` so the server shortens the vectors, and ``model`` becomes
    ``"<model>@<dim>"`` because shortened vectors form a different space. When neither
    given nor known, it is learned from the first response (reading ``dim`` before
    any ``embed`` sends one probe request). ``send_dimensions`` forces the parameter
    on or off for servers that reject or require it.

    ``api_key`` defaults to ``$OPENAI_API_KEY``; with neither, no Authorization header
    is sent (local servers). ``client`` / ``async_client`` inject pre-configured httpx
    clients, which this class then never closes.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        dim: int | None = None,
        timeout: float = 30,
        batch_size: int = 256,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        backoff: float = 0.5,
        send_dimensions: bool | None = None,
        model_id: str | None = None,
    ):
        self.api_model = validate_model_name(model)
        if dim is not None:
            validate_dim(dim)
        native = KNOWN_DIMS.get(model)
        if send_dimensions is None:
            send_dimensions = dim is not None and dim != native
        if send_dimensions and dim is None:
            raise ValidationFailed("send_dimensions=True needs dim")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationFailed(f"batch_size must be a positive int, got {batch_size!r}")
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise ValidationFailed("max_retries and backoff must be >= 0, timeout > 0")
        self.send_dimensions = send_dimensions
        default_id = f"{model}@{dim}" if send_dimensions else model
        self.model = validate_model_name(model_id if model_id is not None else default_id)
        self.url = base_url.rstrip("/") + "/embeddings"
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = backoff
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._dim: int | None = dim if dim is not None else native
        self._client = client
        self._owns_client = client is None
        self._async_client = async_client
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIEmbedder(model={self.api_model!r}, url={self.url!r}, dim={self._dim})"

    # -- public API --------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector length; one probe request if it is neither given nor known."""
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed in requests of at most ``batch_size`` texts, blocking."""
        batch = coerce_texts(texts)
        client = self._sync_client() if batch else None
        out: list[list[float]] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            out.extend(self._parse(self._post_sync(client, chunk), len(chunk)))
        return out

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed without blocking the event loop (httpx.AsyncClient).

        Without an injected ``async_client`` a short-lived one is opened per call: an
        AsyncClient is bound to the event loop that first used it, and callers of a
        library cannot be assumed to keep one loop alive.
        """
        batch = coerce_texts(texts)
        if not batch:
            return []
        if self._async_client is not None:
            return await self._aembed_with(self._async_client, batch)
        async with _httpx().AsyncClient(timeout=self.timeout) as client:
            return await self._aembed_with(client, batch)

    def close(self) -> None:
        """Close the internally created sync client (injected clients are left alone)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _httpx().Client(timeout=self.timeout)
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _payload(self, chunk: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.api_model, "input": chunk}
        if self.send_dimensions:
            payload["dimensions"] = self._dim
        return payload

    def _post_sync(self, client: Any, chunk: list[str]) -> Any:
        httpx = _httpx()
        payload, headers = self._payload(chunk), self._headers()
        for attempt in range(self.max_retries + 1):
            try:
                response = client.post(self.url, json=payload, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise self._transport_error(exc) from exc
                time.sleep(self._delay(attempt, None))
                continue
            if not _retryable(response.status_code) or attempt == self.max_retries:
                return response
            time.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _aembed_with(self, client: Any, batch: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(batch), self.batch_size):
            chunk = batch[start : start + self.batch_size]
            out.extend(self._parse(await self._post_async(client, chunk), len(chunk)))
        return out

    async def _post_async(self, client: Any, chunk: list[str]) -> Any:
        httpx = _httpx()
        payload, headers = self._payload(chunk), self._headers()
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.post(self.url, json=payload, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise self._transport_error(exc) from exc
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if not _retryable(response.status_code) or attempt == self.max_retries:
                return response
            await asyncio.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, response: Any) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when it sends one."""
        if response is not None:
            retry_after = response.headers.get("retry-after")
            try:
                if retry_after is not None:
                    return min(max(float(retry_after), 0.0), _MAX_RETRY_AFTER)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        return self.backoff * (2**attempt) * random.uniform(0.5, 1.0)

    def _transport_error(self, exc: Exception) -> EmbeddingError:
        return EmbeddingError(
            f"embedding request to {self.url} failed after {self.max_retries + 1} attempts: "
            f"{type(exc).__name__}: {exc}"
        )

    # -- response ----------------------------------------------------------------

    def _parse(self, response: Any, count: int) -> list[list[float]]:
        """Check status and shape, and return vectors in input order (by ``index``)."""
        if response.status_code >= 400:
            raise EmbeddingError(
                f"embedding request to {self.url} failed with HTTP {response.status_code}: "
                f"{_server_message(response)}",
                status_code=response.status_code,
            )
        try:
            items = response.json()["data"]
            by_index = {int(item["index"]): item["embedding"] for item in items}
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"malformed embeddings response from {self.url}: {exc!r}",
                status_code=response.status_code,
            ) from exc
        if len(items) != count or sorted(by_index) != list(range(count)):
            raise EmbeddingError(
                f"{self.url} returned {len(items)} embeddings with indexes "
                f"{sorted(by_index)[:10]}... for {count} inputs"
            )
        vectors = [by_index[i] for i in range(count)]
        if self._dim is None:  # learn the size from the first answer
            try:
                self._dim = validate_dim(len(vectors[0]))
            except (TypeError, ValidationFailed) as exc:
                raise EmbeddingError(f"{self.url} returned an unusable vector: {exc}") from exc
        return coerce_vectors(vectors, dim=self._dim, count=count, source=self.url)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _server_message(response: Any) -> str:
    """Dig the human-readable message out of the usual error shapes."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:500]
