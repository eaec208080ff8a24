"""The ingress's tenant gate: who is calling (key -> tenant), whether they may
(the shared ledger's limits, the tenant's releases), and what they did (audit
record, completion owner for feedback, metrics, `tenant` on `rag.request`).

Knows HTTP requests and the ledger's interface; the counting is in
`tenants.ledger`, the keys and records in `tenants.store`.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from opentelemetry import trace

from graph.config import RagServingArgs
from graph.errors import APIError, error_response
from graph.gate.admission import CURRENT, Admission, Principal
from graph.gate.metering import charged, wait_for_slot
from models.embedder import EmbedInput
from models.generation import Chunk, GenerationRequest
from telemetry.metrics import metrics
from telemetry.tracing import CURRENT_RELEASE, trace_id_hex
from tenants.audit import AuditLog
from tenants.config import resolve_audit_path, resolve_db_url
from tenants.directory import TenantDirectory
from tenants.store import Completion, TenantStore
from tenants.writer import BackgroundWriter

logger = logging.getLogger("ragserve.tenants")
RELEASE_HEADER = "x-ragserve-release"
OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/redoc", "/openapi.json"})
#: Principals that may change the graph (`/admin/*`): the operator's static
#: keys, or anyone while the graph is open. A tenant's key may not.
OPERATORS = frozenset({"api-keys", "anonymous"})


def route_of(request: Request) -> str:
    """The path inside the app: without Serve's route prefix (`root_path`),
    so an app served at `/tenants` is gated exactly as one served at `/`."""
    path = request.url.path
    root = str(request.scope.get("root_path") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :] or "/"
    return path


class _Refused(APIError):
    def __init__(self, status: int, message: str, code: str, **kw: Any) -> None:
        self.headers: dict[str, str] = kw.pop("headers", {})
        super().__init__(status, message, code=code, **kw)


class TenantGate:
    """Authenticate, admit, meter and record every `/v1/` request."""

    def __init__(
        self,
        args: RagServingArgs,
        ledger: Any,
        static_keys: frozenset[str] = frozenset(),
        replica: str = "",
    ) -> None:
        cfg = args.tenants
        self.store = TenantStore(resolve_db_url(cfg.db))
        self.directory = TenantDirectory(self.store, cfg.refresh_s)
        self.audit = AuditLog(resolve_audit_path(cfg.audit_log))
        self.ledger = ledger
        self.fair_share = cfg.fair_share.enabled
        self.static_keys = static_keys
        self.replica = replica
        self._completions = BackgroundWriter(
            self.store.record_completions, name="completion-writer"
        )
        if not self.directory.configured and not static_keys:
            logger.warning(
                "no tenants configured (%s): the API is open to anyone who can "
                "reach it; add one with `ragserve tenant add NAME`",
                self.store.url,
            )

    @property
    def open(self) -> bool:
        return not self.directory.configured and not self.static_keys

    def close(self) -> None:
        """Write out every queued record (replica shutdown, SIGTERM)."""
        self.directory.close()
        self._completions.close()
        self.audit.close()

    def authenticate(self, request: Request) -> Principal:
        key = _presented_key(request)
        if key:
            tenant = self.directory.lookup(key)
            if tenant is not None:
                return Principal.of(tenant)
            if any(hmac.compare_digest(key, k) for k in self.static_keys):
                return Principal("api-keys")
        if self.open:
            # No tenants and no keys: any caller (and whatever key an SDK
            # sends, e.g. the openai client's placeholder) is served.
            return Principal("anonymous")
        raise APIError(
            401,
            "Missing, invalid or revoked API key (Authorization: Bearer KEY "
            "or api-key: KEY).",
            code="invalid_api_key",
        )

    async def admit(self, who: Principal, request: Request, rid: str) -> Admission:
        release = request.headers.get(RELEASE_HEADER)
        if who.releases is not None and release and release not in who.releases:
            raise APIError(
                404,
                f"The release {release!r} does not exist.",
                param=RELEASE_HEADER,
                code="release_not_found",
            )
        span = trace.get_current_span()
        adm = Admission(who, None, route_of(request), rid, trace_id_hex(span))
        adm.release = release
        if adm.route == "/v1/feedback":
            return adm  # rating an answer is not another request against limits
        if not self.directory.configured:
            # No tenants: nothing to limit or share, so no ledger round trip
            # (3.1-3.5 CPU-ms per request on two cores, docs/performance.md).
            return adm
        decision = await self.ledger.admit(who.name, asdict(who.limits))
        adm.headers = decision["headers"]
        if not decision["allowed"]:
            metrics().rate_limited(self._label(who), decision["code"])
            raise _Refused(
                429,
                decision["message"],
                decision["code"],
                retry_after=max(1, math.ceil(decision["retry_after_s"])),
                headers=decision["headers"],
            )
        adm.lease = decision["lease"]
        return adm

    async def serve(
        self, request: Request, answer: Callable[[], Awaitable[Response]], rid: str
    ) -> Response:
        """Answer `request` through the gate (probes and docs pass freely;
        everything else, unknown paths included, needs a key once tenants
        exist)."""
        if route_of(request) in OPEN_PATHS:
            return await answer()
        started = time.perf_counter()
        try:
            who = self.authenticate(request)
            trace.get_current_span().set_attribute("tenant", self._label(who))
            if route_of(request).startswith("/admin/") and who.name not in OPERATORS:
                raise APIError(
                    403,
                    "Admin routes take an operator key (server.api_keys), "
                    "not a tenant's.",
                    code="permission_denied",
                )
            adm = await self.admit(who, request, rid)
        except APIError as err:
            refused = error_response(err, rid)
            refused.headers.update(getattr(err, "headers", {}))
            self._record_refusal(request, rid, err.status, started)
            return refused
        token = CURRENT.set(adm)
        try:
            response = await answer()
        except BaseException:  # the client went away: free the lease all the same
            self.finish(adm, 499)
            raise
        finally:
            CURRENT.reset(token)
        response.headers.update(adm.headers)
        body = getattr(response, "body_iterator", None)
        if body is None:
            self.finish(adm, response.status_code)
        else:
            response.body_iterator = self._finish_after(  # type: ignore[attr-defined]
                body, adm, response.status_code
            )
        return response

    async def _finish_after(
        self, body: AsyncIterator[Any], adm: Admission, status: int
    ) -> AsyncIterator[Any]:
        try:
            async for part in body:
                yield part
        finally:
            self.finish(adm, status)

    def finish(self, adm: Admission, status: int) -> None:
        """Return the lease; record the request in the audit log and metrics."""
        if adm.lease:
            self.ledger.finish(adm.lease)
        latency_ms = (time.perf_counter() - adm.started) * 1000
        who = adm.principal
        self.audit.request(
            tenant=who.name,
            route=adm.route,
            release=adm.release,
            status=status,
            prompt_tokens=adm.prompt_tokens,
            completion_tokens=adm.completion_tokens,
            latency_ms=round(latency_ms, 1),
            trace_id=adm.trace_id,
            request_id=adm.request_id,
            completion_id=adm.completion_id,
            replica=self.replica,
        )
        label = self._label(who)
        metrics().tenant_request(label, adm.route, status, latency_ms)
        metrics().tenant_tokens(label, adm.prompt_tokens, adm.completion_tokens)

    def _record_refusal(
        self, request: Request, rid: str, status: int, started: float
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        self.audit.request(
            tenant=None,
            route=route_of(request),
            status=status,
            latency_ms=round(latency_ms, 1),
            trace_id=trace_id_hex(trace.get_current_span()),
            request_id=rid,
            replica=self.replica,
        )
        metrics().tenant_request("none", route_of(request), status, latency_ms)

    def _label(self, who: Principal) -> str:
        """Metric label: configured tenants by name; everyone else by kind."""
        return who.name if who.name in self.directory.names() else "none"

    def meter(
        self, generate: Callable[[GenerationRequest], AsyncIterator[Chunk]]
    ) -> Callable[[GenerationRequest], AsyncIterator[Chunk]]:
        """`generate` behind the fair-share slot, its tokens charged as they
        stream and reconciled to the final usage."""

        async def metered(request: GenerationRequest) -> AsyncIterator[Chunk]:
            adm = CURRENT.get()
            if adm is None or adm.lease is None:
                if adm is not None:  # unmetered, but still the caller's to rate
                    self._record_completion(adm, request)
                async for chunk in generate(request):
                    yield chunk
                return
            # the release the router chose (graph.routing.router), if any
            adm.release = adm.release or CURRENT_RELEASE.get()
            try:  # the slot is given back however this ends (cancel included)
                if self.fair_share:
                    request.priority = await wait_for_slot(
                        self.ledger, adm, self._label(adm.principal)
                    )
                self._record_completion(adm, request)
                async for chunk in charged(generate(request), adm, self.ledger):
                    yield chunk
            finally:
                self.ledger.release_slot(adm.lease)

        return metered

    def _record_completion(self, adm: Admission, request: GenerationRequest) -> None:
        adm.release = adm.release or CURRENT_RELEASE.get()
        adm.completion_id = request.request_id
        self._completions.put(
            Completion(
                request.request_id, adm.principal.name, adm.release, adm.trace_id
            )
        )

    def meter_embed(
        self, embed: Callable[[list[EmbedInput]], Awaitable[Any]]
    ) -> Callable[[list[EmbedInput]], Awaitable[Any]]:
        """Charge `/v1/embeddings` input tokens to the caller."""

        async def metered(texts: list[EmbedInput]) -> Any:
            vectors, tokens = await embed(texts)
            adm = CURRENT.get()
            if adm is not None and adm.lease is not None and tokens:
                self.ledger.charge(adm.lease, tokens, 0)
                adm.prompt_tokens += tokens
            return vectors, tokens

        return metered


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("api-key", "").strip() or None


def access_note(args: RagServingArgs) -> str:
    """One line for the start banner: who may call the API."""
    store = TenantStore(resolve_db_url(args.tenants.db))
    try:
        count = len(store.tenants())
    finally:
        store.close()
    if count:
        return f"Access: {count} tenant(s) in {store.url}; every /v1 call needs a key."
    if args.server.api_keys:
        return "Access: server.api_keys only (no tenants configured)."
    return "Access: OPEN - no tenants configured (add one with `ragserve tenant add`)."
