"""Property-based tests of the console API against its own OpenAPI schema (schemathesis): for generated
path, query and header values -- the untrusted input of a web port -- no request makes the server fail
(5xx), and every response matches the schema it documents (status code, content type, body).

Half the calls carry the operator token, so the actions run too (on ids that mostly do not exist).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.console import TOKEN, Fixture

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(operation: Any, *, token: bool) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: Any) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"} if token else None
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


def test_api_conforms_to_its_schema(console: tuple[Fixture, Any]) -> None:
    _, client = console
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        _fuzz(operation, token=operation.method.upper() == "POST")
        if operation.method.upper() == "POST":
            _fuzz(operation, token=False)  # without the token: 401, as documented


def test_the_schema_documents_every_route(console: tuple[Fixture, Any]) -> None:
    _, client = console
    paths = set(client.get("/api/openapi.json").json()["paths"])
    assert {
        "/api/v1/dashboard",
        "/api/v1/studies",
        "/api/v1/studies/{study_uid}",
        "/api/v1/jobs/{job_id}",
        "/api/v1/failed",
        "/api/v1/jobs/{job_id}/retry",
        "/api/v1/jobs/{job_id}/discard",
        "/api/v1/results/{result_id}/image.png",
        "/api/v1/models",
        "/api/v1/config",
        "/api/v1/health",
    } <= paths
    assert not any(p.startswith("/actions") or p == "/" for p in paths)  # pages are not the API
