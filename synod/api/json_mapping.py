"""The JSON side of etcd's gateway: request bodies in, responses and errors out.

What etcd 3.4's grpc-gateway does, checked against a real etcd 3.4.23 (see docs/gateway.md):

- Bodies are proto3 JSON: either the original field names or their lowerCamelCase JSON
  names are accepted, 64-bit integers as strings or numbers, bytes as standard base64,
  enums by name or number. Unknown fields are ignored (not an error). An empty body or
  `null` is the empty request. Anything else that is not a JSON object, broken JSON or a
  value of the wrong type is HTTP 400 with gRPC code 3 (INVALID_ARGUMENT).
- Responses use the original proto field names (`cluster_id`, `ID`, `TTL`, `dbSize`),
  64-bit integers as strings, 32-bit ones as numbers, bytes as base64, enums by name, and
  omit every zero value (an empty `value`, `succeeded: false`, a PUT event's `type`).
- A unary error: the HTTP status grpc-gateway v1 derives from the gRPC code and the body
  `{"error": msg, "message": msg, "code": n}`.
- Inside a stream each message is `{"result": {...}}` followed by a newline; an error is
  `{"error": {"grpc_code", "http_code", "message", "http_status"}}` (no newline).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# grpc-gateway v1 runtime.HTTPStatusFromCode (the version etcd 3.4 links): gRPC code -> HTTP.
HTTP_STATUS_OF_CODE: dict[int, int] = {
    0: 200,  # OK
    1: 408,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 412,  # FAILED_PRECONDITION (v1; grpc-gateway v2 changed it to 400)
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}

INVALID_ARGUMENT = 3
UNKNOWN = 2

_GO_JSON_TYPE = {list: "array", str: "string", int: "number", float: "number", bool: "bool"}


class BadRequestBody(Exception):
    """The body is not a valid JSON encoding of the request message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def code_number(code: object) -> int:
    """A gRPC status code as its wire number: an int, an IntEnum, or a grpc.StatusCode."""
    value = getattr(code, "value", code)
    if isinstance(value, tuple):  # grpc.StatusCode's value is (number, name)
        value = value[0]
    if isinstance(value, int):
        return value
    return UNKNOWN


def http_status(code: object) -> int:
    return HTTP_STATUS_OF_CODE.get(code_number(code), 500)


def load_json(body: bytes | str) -> Any:
    """The JSON value of a body (None for an empty one); BadRequestBody if it is not JSON."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as error:
        raise BadRequestBody(f"invalid UTF-8 in request body: {error.reason}") from error
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequestBody(_json_error_text(error)) from error
    except RecursionError as error:
        raise BadRequestBody("exceeded max depth") from error


def _json_error_text(error: json.JSONDecodeError) -> str:
    if error.pos >= len(error.doc.rstrip()):
        return "unexpected EOF"
    return f"invalid JSON at offset {error.pos}: {error.msg}"


def parse_value(value: Any, message: M) -> M:
    """Fill `message` from a decoded JSON value (None is the empty message)."""
    if value is None:
        return message
    if not isinstance(value, dict):
        kind = _GO_JSON_TYPE.get(type(value), "value")
        raise BadRequestBody(
            f"json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage"
        )
    try:
        json_format.ParseDict(_known_fields(value, message.DESCRIPTOR), message)
    except json_format.ParseError as error:
        raise BadRequestBody(str(error)) from error
    except (ValueError, TypeError, RecursionError) as error:
        raise BadRequestBody(f"invalid request: {error}") from error
    return message


def _known_fields(value: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """`value` without the keys `descriptor` has no field for (etcd ignores them), recursively.
    An unknown enum name stays an error, which json_format's ignore_unknown_fields would
    silently drop."""
    known: dict[str, Any] = {}
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor).get(key)
        if field is None:
            continue
        sub = field.message_type
        if (
            sub is not None
            and not sub.GetOptions().map_entry
            and sub.file.package != "google.protobuf"
        ):
            if isinstance(item, dict):
                item = _known_fields(item, sub)
            elif isinstance(item, list):
                item = [_known_fields(x, sub) if isinstance(x, dict) else x for x in item]
        known[key] = item
    return known


def _by_json_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {field.json_name: field for field in descriptor.fields}


def parse_request(body: bytes | str, message: M) -> M:
    """A request message from a gateway body; BadRequestBody if it cannot be one."""
    return parse_value(load_json(body), message)


def message_dict(message: Message) -> dict[str, Any]:
    """etcd's JSON form of a message, as a dict (original names, zero values omitted)."""
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=False
    )
    return result


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def message_json(message: Message) -> str:
    return dumps(message_dict(message))


def result_chunk(message: Message) -> bytes:
    """One message of a stream: `{"result": {...}}` and a newline."""
    return (dumps({"result": message_dict(message)}) + "\n").encode()


def error_body(code: object, message: str) -> bytes:
    """A unary call's error body."""
    return dumps({"error": message, "message": message, "code": code_number(code)}).encode()


def stream_error_chunk(code: object, message: str) -> bytes:
    """An error inside (or instead of) a stream."""
    number = code_number(code)
    status = HTTP_STATUS_OF_CODE.get(number, 500)
    return dumps(
        {
            "error": {
                "grpc_code": number,
                "http_code": status,
                "message": message,
                "http_status": HTTPStatus(status).phrase,
            }
        }
    ).encode()
