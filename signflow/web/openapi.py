"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json (the suite
checks it against the routes, and fuzzes the app against it with schemathesis)."""

from __future__ import annotations

from typing import Any

from signflow.models import RequestState, Urgency

# The multipart fields POST /requests reads (any other field is ignored).
SUBMIT_FIELDS = frozenset({"group", "route", "destination", "urgency", "title", "note",
                           "stamp_position", "external_reference"})
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": _PROBLEM}


_COMMON = {"401": _err("No valid token (missing, unknown, revoked, expired)"),
           "403": _err("The token lacks the scope"),
           "429": {**_err("Too many calls with this token"),
                   "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
           "503": _err("A dependency is unavailable")}
_ONE = {**_COMMON, "404": _err("No such request, or not the token's account's")}
_ID = [{"name": "request_id", "in": "path", "required": True,
        "schema": {"type": "integer", "minimum": 0}}]
_REQ = {"description": "A request", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Request"}}}}
_STRING_OR_NULL = {"type": ["string", "null"]}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "signflow API", "version": "1.1.0",
             "description": "Signed documents for destination services, and documents sent "
                            "for signature by submitting systems. Tokens belong to integration "
                            "accounts (`signflow api-token create NAME --scope ...`); each "
                            "operation needs the scope it names (403 otherwise). Errors are "
                            "RFC 9457 problem documents whose `type` is stable "
                            "(`urn:signflow:problem:<code>`)."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/requests": {
            "get": {
                "summary": "Requests visible to the token's account, newest first (scope read)",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {
                        "type": "string", "enum": [s.value for s in RequestState]}},
                    {"name": "external_reference", "in": "query", "schema": {"type": "string"}},
                    {"name": "created_after", "in": "query",
                     "schema": {"type": "string", "format": "date-time"}},
                    {"name": "limit", "in": "query",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "cursor", "in": "query", "description": "next_cursor of the page "
                     "before (opaque)", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "One page", "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["items", "next_cursor"], "properties": {
                            "items": {"type": "array", "items": {
                                "$ref": "#/components/schemas/Request"}},
                            "next_cursor": _STRING_OR_NULL}}}}},
                    "400": _err("A bad filter or cursor"), **_COMMON}},
            "post": {
                "summary": "Send a PDF for signature to the account's on-call group (scope "
                           "submit). The same checks, limits and messages as the upload page.",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "description":
                                "A retry with the same key returns the first answer (header "
                                "Idempotent-Replayed); the same key with another body is 422",
                                "schema": {"type": "string", "maxLength": 200}}],
                "requestBody": {"required": True, "content": {"multipart/form-data": {
                    "schema": {"type": "object",
                               "required": ["document", "destination", "urgency"],
                               "properties": {
                                   "document": {"type": "string", "format": "binary"},
                                   "group": {"type": "integer", "description":
                                             "the account's on-call group (or send route)"},
                                   "route": {"type": "string", "description": "group ids in "
                                             "signing order, comma-separated"},
                                   "destination": {"type": "integer"},
                                   "urgency": {"type": "string",
                                               "enum": [u.value for u in Urgency]},
                                   "title": {"type": "string"},
                                   "note": {"type": "string", "maxLength": 2000},
                                   "stamp_position": {"type": "string", "description":
                                                      "page,x,y,width,height"},
                                   "external_reference": {"type": "string", "maxLength": 200}}}}}},
                "responses": {"201": _REQ, "400": _err("A missing or malformed field"),
                              **_COMMON,
                              "413": _err("The PDF is over the limit (`max_bytes`)"),
                              "415": _err("Not multipart/form-data"),
                              "422": _err("The PDF is refused, or the Idempotency-Key was "
                                          "used with another body")}},
        },
        "/requests/{request_id}": {"get": {
            "summary": "One request and its state (scope read)", "parameters": _ID,
            "responses": {"200": _REQ, **_ONE}}},
        "/requests/{request_id}/timeline": {"get": {
            "summary": "The request's lifecycle, oldest first (scope read)", "parameters": _ID,
            "responses": {"200": {"description": "Timeline", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Timeline"}}}}, **_ONE}}},
        "/requests/{request_id}/verification": {"get": {
            "summary": "Signature validation report of the delivered file (scope read)",
            "parameters": _ID,
            "responses": {"200": {"description": "Report", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Verification"}}}}, **_ONE}}},
        "/requests/{request_id}/document": {"get": {
            "summary": "Download the (signed) PDF (scope download)", "parameters": _ID,
            "responses": {"200": {"description": "PDF", "headers": {"Digest": {
                "description": "sha-256=<hex>", "schema": {"type": "string"}}},
                "content": {"application/pdf": {"schema": {"type": "string",
                                                           "format": "binary"}}}},
                **_ONE, "409": _err("The document was purged")}}},
        "/requests/{request_id}/fhir": {"get": {
            "summary": "The signed document as a FHIR R4 Bundle: a DocumentReference and "
                       "its Provenance (scope read)", "parameters": _ID,
            "responses": {"200": {"description": "Bundle", "content": {
                "application/fhir+json": {"schema": {"$ref": "#/components/schemas/Bundle"}}}},
                **_ONE, "409": _err("Not signed yet")}}},
        "/stats": {"get": {
            "summary": "Turnaround statistics per on-call group and urgency, and per week "
                       "(scope stats); times in seconds from the upload, nearest-rank percentiles",
            "parameters": [
                {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"},
                 "description": "first day (site time zone); with `to`, or neither (last 28 days)"},
                {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"},
                 "description": "last day, included"},
                {"name": "group", "in": "query", "schema": {"type": "integer"},
                 "description": "one on-call group's id; every group without it"}],
            "responses": {"200": {"description": "Figures", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "400": _err("A reversed, unbounded or malformed period, "
                                         "or an unknown group"),
                          **_COMMON}}},
        "/requests/{request_id}/acknowledge": {"post": {
            "summary": "Acknowledge receipt of a delivered document (scope acknowledge)",
            "parameters": _ID,
            "responses": {"200": _REQ, **_ONE, "409": _err("Not delivered")}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail"],
                        "properties": {
                            "type": {"type": "string", "format": "uri"},
                            "title": {"type": "string"},
                            "status": {"type": "integer"}, "detail": {"type": "string"},
                            "max_bytes": {"type": "integer"}}},
            "Request": {"type": "object", "required": ["id", "state", "created_at"],
                        "properties": {
                "id": {"type": "integer"}, "title": {"type": "string"},
                "state": {"type": "string", "enum": [s.value for s in RequestState]},
                "urgency": {"type": "string", "enum": [u.value for u in Urgency]},
                "group": {"type": "string"},
                "destination": {"type": "string"}, "external_reference": _STRING_OR_NULL,
                "document_sha256": {"type": "string"},
                "signed_sha256": _STRING_OR_NULL, "signed_by": _STRING_OR_NULL,
                "signed_at": {"type": ["string", "null"], "format": "date-time"},
                "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
                "created_at": {"type": "string", "format": "date-time"}}},
            "Timeline": {"type": "object", "required": ["id", "events"], "properties": {
                "id": {"type": "integer"},
                "events": {"type": "array", "items": {"type": "object",
                                                      "required": ["at", "event"], "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "event": {"type": "string"}}}}}},
            "Bundle": {"type": "object", "required": ["resourceType", "type", "entry"],
                       "properties": {"resourceType": {"const": "Bundle"},
                                      "type": {"type": "string"},
                                      "entry": {"type": "array", "items": {"type": "object"}}}},
            "Verification": {"type": "object", "properties": {
                "ok": {"type": "boolean", "description": "every hospital signature valid, the "
                       "last covering the whole file; earlier outside signatures intact"},
                "problems": {"type": "array", "items": {"type": "string"}},
                "notes": {"type": "array", "items": {"type": "string"}, "description":
                          "e.g. an earlier signature not issued by the hospital"},
                "signatures": {"type": "array", "items": {"type": "object", "properties": {
                    "signer": {"type": "string"}, "issuer": {"type": "string"},
                    "outside": {"type": "boolean", "description": "certificate not issued "
                                "under the hospital root"},
                    "intact": {"type": "boolean"}, "trusted": {"type": "boolean"},
                    "ok": {"type": "boolean"}, "is_timestamp": {"type": "boolean"},
                    "problems": {"type": "array", "items": {"type": "string"}}}}}}},
        },
    },
}
