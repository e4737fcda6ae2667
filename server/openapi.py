"""An OpenAPI 3.0 document for the REST/JSON gateway, made from the .proto itself.

`generate_stubs` runs protoc with source info (so comments become descriptions) and
calls `openapi_document` on the descriptor set; the result is committed beside the
stubs (`server/generated/search.openapi.json`, checked for drift by the tests) and
served by the gateway at `/openapi.json`. Paths and verbs come from the methods'
`google.api.http` annotations; schemas follow protobuf's JSON mapping (lowerCamelCase
names, 64-bit integers as strings), as gRPC-Gateway's protoc-gen-openapiv2 does.
"""

from __future__ import annotations

import json
import re

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: {"type": "string"},
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: {"type": "boolean"},
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: {"type": "integer", "format": "int64"},
    # the JSON mapping writes 64-bit integers as strings (JavaScript numbers lose bits)
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: {"type": "string", "format": "int64"},
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE

#: gRPC status -> HTTP status, as gRPC-Gateway maps them (runtime.HTTPStatusFromCode)
ERROR_RESPONSES = {
    "400": "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: the message says what to fix",
    "401": "UNAUTHENTICATED: missing or wrong bearer token",
    "403": "PERMISSION_DENIED: the call needs the admin token",
    "404": "NOT_FOUND: a label filter names a label the index does not hold",
    "411": "a body was sent without a length (send Content-Length, or a chunked body)",
    "413": "the request body is larger than the server accepts",
    "415": "the body is not sent as 'Content-Type: application/json'",
    "429": "RESOURCE_EXHAUSTED: the server is at its admission limit; retry with backoff",
    "500": "INTERNAL: see the server log",
    "503": "UNAVAILABLE: nothing is serving yet, or the vector store is unreachable; retry",
    "504": "DEADLINE_EXCEEDED",
}


#: what a path variable (a collection's name) may be: server.collections checks the same
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
#: NAME_PATTERN in words, for the gRPC check's and the REST gateway's messages alike
NAME_RULE = (
    "use letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters"
)
_PATH_FIELD = re.compile(r"\{([a-z_]+)\}")


def http_bindings(rule) -> list[tuple[str, str, bool]]:
    """(verb, path template, takes a body) of a method's `google.api.http` rule and its
    additional bindings, the rule's own first."""
    out = []
    for binding in (rule, *rule.additional_bindings):
        verb, path = next(
            (verb, getattr(binding, verb))
            for verb in ("get", "post", "put", "delete", "patch")
            if getattr(binding, verb)
        )
        out.append((verb, path, binding.body == "*"))
    return out


def path_fields(template: str) -> list[str]:
    """The request fields a path template's variables fill ({collection}, {name})."""
    return _PATH_FIELD.findall(template)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple, str]:
    """Leading comments by descriptor path (protoc's source info)."""
    out = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            out[tuple(location.path)] = " ".join(line.strip() for line in text.splitlines())
    return out


def _json_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    return field.json_name or field.name


def openapi_document(descriptor_set: bytes, title: str, version: str) -> dict:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    file = next(f for f in files.file if f.service)
    comments = _comments(file)
    package = file.package
    schemas: dict[str, dict] = {}
    maps: dict[str, descriptor_pb2.DescriptorProto] = {}
    for index, message in enumerate(file.message_type):
        for nested in message.nested_type:
            if nested.options.map_entry:
                maps[f".{package}.{message.name}.{nested.name}"] = nested
        properties = {}
        for field_index, field in enumerate(message.field):
            schema = _field_schema(field, maps)
            described = comments.get((4, index, 2, field_index))
            if described:
                schema = {**schema, "description": described}
            properties[_json_name(field)] = schema
        schemas[message.name] = {"type": "object", "properties": properties}
        if (4, index) in comments:
            schemas[message.name]["description"] = comments[(4, index)]
    schemas["Status"] = {
        "type": "object",
        "description": "An error, as gRPC-Gateway writes it: the gRPC status and message.",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "gRPC status code"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }
    paths: dict[str, dict] = {}
    service = file.service[0]
    for index, method in enumerate(service.method):
        request = method.input_type.rsplit(".", 1)[-1]
        response = method.output_type.rsplit(".", 1)[-1]
        for binding, (verb, path, has_body) in enumerate(
            http_bindings(method.options.Extensions[annotations_pb2.http])
        ):
            operation: dict = {
                # a method's further bindings (its route in a named collection) get ids
                # of their own: OpenAPI wants operation ids unique
                "operationId": method.name + ("InCollection" if binding else ""),
                "summary": comments.get((6, 0, 2, index), method.name),
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{response}"}
                            }
                        },
                    },
                    **{
                        code: {
                            "description": text,
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        }
                        for code, text in ERROR_RESPONSES.items()
                    },
                },
                "tags": [service.name],
            }
            names = path_fields(path)
            if names:
                operation["parameters"] = [
                    {
                        "name": name,
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": NAME_PATTERN},
                    }
                    for name in names
                ]
            if has_body:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                    },
                }
            paths.setdefault(path, {})[verb] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": " ".join(comments.get((12,), "").split())
            or "siamese-search REST/JSON gateway",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }


#: protobuf's well-known JSON types, as their JSON mapping writes them: a Struct is
#: any JSON object, a Value any JSON value (here a field's string, number or boolean)
_WELL_KNOWN: dict[str, dict] = {
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {
        "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]
    },
}


def _field_schema(field, maps) -> dict:
    if field.type == _MESSAGE:
        entry = maps.get(field.type_name)
        if entry is not None:  # map<K, V>: a JSON object (keys are always strings)
            value = entry.field[1]
            return {"type": "object", "additionalProperties": _field_schema(value, maps)}
        schema: dict = dict(_WELL_KNOWN.get(field.type_name, {})) or {
            "$ref": f"#/components/schemas/{field.type_name.rsplit('.', 1)[-1]}"
        }
    else:
        schema = dict(_SCALARS[field.type])
    if field.label == _REPEATED:
        return {"type": "array", "items": schema}
    return schema


def serving_document(
    document: dict,
    limits,
    labelled: bool | None,
    fields: dict[str, set[str]] | None = None,
    manages_collections: bool = False,
) -> dict:
    """The document a running gateway serves: the committed one with request schemas
    that say what this server accepts (its limits; whether its index takes labels),
    closed to unknown fields. The gateway validates every body against it, so the
    document and the server cannot disagree on a rule a schema can state.

    The request schemas (labels, metadata fields) are one collection's: GET
    /openapi.json shows the default one's (`?collection=NAME`: that one's), and the
    gateway checks a body naming another collection against that one's document. A
    server without --collections makes none and drops none, so its document leaves
    those routes out.

    Two rules no JSON Schema can state remain: token counts (`maxTextTokens`,
    `maxCallTokens`) and the characters of a whole call (`maxCallChars`), both in GET
    /v1/info and in the descriptions here; a request over them gets 400.
    """
    from siamese_search.server.config import MAX_LABEL_CHARS, MAX_LABELS
    from siamese_search.server.scrolling import TOKEN_PATTERN
    from siamese_search.server.validation import MAX_ID_CHARS, READABLE_PATTERN

    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.max_text_chars,
        "pattern": READABLE_PATTERN,
        "description": f"At most {limits.max_text_chars} characters and "
        f"{limits.max_text_tokens} tokens, with something to read (not only white space, "
        "control or format characters).",
    }
    texts = {
        "type": "array",
        "minItems": 1,
        "maxItems": limits.max_batch,
        "items": text,
        "description": f"1 .. {limits.max_batch} texts, together at most "
        f"{limits.max_call_chars} characters and {limits.max_call_tokens} tokens.",
    }
    k = {"type": "integer", "format": "int32", "minimum": 1, "maximum": limits.max_k}
    min_score = {"type": "number", "format": "float", "minimum": -1, "maximum": 1}
    label = {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_CHARS}
    labels = {"type": "array", "maxItems": MAX_LABELS, "items": label}
    # no control characters, no white space around it (a trailing newline included)
    row_id = {
        "type": "string",
        "maxLength": MAX_ID_CHARS,
        "not": {"anyOf": [{"pattern": "[\x00-\x1f\x7f-\x9f]"}, {"pattern": "^\\s|\\s$"}]},
    }
    example_label: dict
    if labelled is None:  # nothing serving yet: writes are refused anyway
        example_label, example_required = {"type": "string"}, ["text"]
    elif labelled:
        example_label, example_required = label, ["text", "label"]
    else:
        example_label, example_required = {"type": "string", "maxLength": 0}, ["text"]
    rules = {
        "SearchRequest": (
            {
                "text": text,
                "k": k,
                "minScore": min_score,
                "labels": labels,
                "id": {**row_id, "minLength": 1},
            },
            ["k"],
        ),
        "SearchBatchRequest": (
            {"texts": texts, "k": k, "minScore": min_score, "labels": labels},
            ["texts", "k"],
        ),
        "PredictRequest": ({"text": text, "k": k, "minScore": min_score}, ["text", "k"]),
        "PredictBatchRequest": ({"texts": texts, "k": k, "minScore": min_score}, ["texts", "k"]),
        "EmbedRequest": ({"texts": texts}, ["texts"]),
        "Example": ({"id": row_id, "text": text, "label": example_label}, example_required),
        "UpsertRequest": (
            {
                "examples": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": limits.max_batch,
                    "items": {"$ref": "#/components/schemas/Example"},
                }
            },
            ["examples"],
        ),
        "DeleteRequest": (
            {
                "ids": {
                    "type": "array",
                    "maxItems": limits.max_batch,
                    "items": {**row_id, "minLength": 1},
                },
                "label": {**label, "minLength": 0},
            },
            [],
        ),
        "GetInfoRequest": ({}, []),
        "ReloadRequest": ({}, []),
        "GetExamplesRequest": (
            {
                "ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": limits.max_batch,
                    "items": {**row_id, "minLength": 1},
                }
            },
            ["ids"],
        ),
        "ScrollRequest": (
            {
                "limit": {
                    "type": "integer",
                    "format": "int32",
                    "minimum": 0,
                    "maximum": limits.max_batch,
                },
                "pageToken": {"type": "string", "pattern": f"{TOKEN_PATTERN}|^$"},
            },
            [],
        ),
    }
    from siamese_search.indexer.options import INDEX_KINDS

    collection = {"type": "string", "pattern": f"^$|{NAME_PATTERN}"}
    for name in rules:
        if name.endswith("Request"):
            rules[name][0]["collection"] = collection
    rules["CreateCollectionRequest"] = (
        {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "modelDirectory": {"type": "string", "minLength": 1, "maxLength": 4096},
            "indexType": {"type": "string", "enum": ["", *INDEX_KINDS]},
            "labels": {"type": "boolean"},
        },
        ["name", "modelDirectory"],
    )
    rules["DropCollectionRequest"] = ({"name": {"type": "string", "pattern": NAME_PATTERN}}, [])
    rules["ListCollectionsRequest"] = ({}, [])
    rules["GetMapRequest"] = ({"collection": collection}, [])
    served = json.loads(json.dumps(document))
    if not manages_collections:
        del served["paths"]["/v1/collections"]["post"]
        del served["paths"]["/v1/collections/{name}"]
    schemas = served["components"]["schemas"]
    for name, (properties, required) in rules.items():
        schema = schemas[name]
        for field, rule in properties.items():
            described = schema["properties"][field].get("description")
            schema["properties"][field] = {
                **rule,
                **({"description": described} if described else {}),
            }
        schema["additionalProperties"] = False
        if required:
            schema["required"] = required
    # a Search is by a text or by a stored example's id, not both
    schemas["SearchRequest"]["oneOf"] = [{"required": ["text"]}, {"required": ["id"]}]
    _metadata_schemas(schemas, fields or {})
    # a Delete names ids, or a label, or both
    schemas["DeleteRequest"]["anyOf"] = [
        {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
        {"required": ["label"], "properties": {"label": {"minLength": 1}}},
    ]
    return served


def _metadata_schemas(schemas: dict, fields: dict[str, set[str]]) -> None:
    """Example.metadata and the filters, as indexer.metadata checks them: metadata's
    field names, kinds and bounds; a filter's shape (a filter's lists hold field tests
    or filters of field tests), its keys (the fields the serving version holds, and
    label and id) and which of them take a range (the ones holding numbers)."""
    from siamese_search.indexer import metadata as rules

    scalar = [
        {"type": "string", "maxLength": rules.MAX_STRING},
        {"type": "number"},
        {"type": "boolean"},
    ]
    value = {
        "anyOf": [
            *scalar,
            {"type": "array", "maxItems": rules.MAX_LIST, "items": {"anyOf": scalar}},
        ]
    }
    example = schemas["Example"]
    example["properties"]["metadata"] = {
        "type": "object",
        "maxProperties": rules.MAX_KEYS,
        # a name's length (MAX_KEY_CHARS) is the gRPC check's: OpenAPI 3.0 schemas
        # have neither propertyNames nor patternProperties
        "additionalProperties": value,
        "not": {"anyOf": [{"required": [key]} for key in (*rules.RECORD_FIELDS, "")]},
        "description": example["properties"]["metadata"].get("description", ""),
    }

    def match(values: dict) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "oneOf": [{"required": ["value"]}, {"required": ["any"]}],
            "properties": {
                "value": values,
                "any": {"type": "array", "minItems": 1, "maxItems": rules.MAX_ANY, "items": values},
            },
        }

    bounds = {"type": "number"}
    tests: list[dict] = [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["key", "match"],
            "properties": {
                "key": {"enum": list(rules.RECORD_KEYS)},
                "match": match({"type": "string"}),
            },
        }
    ]
    if fields:
        tests.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "match"],
                "properties": {
                    "key": {"enum": sorted(fields)},
                    "match": match(
                        {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
                    ),
                },
            }
        )
    numeric = sorted(key for key, kinds in fields.items() if "number" in kinds)
    if numeric:
        tests.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "range"],
                "properties": {
                    "key": {"enum": numeric},
                    "range": {
                        "type": "object",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "properties": {op: bounds for op in ("gt", "gte", "lt", "lte")},
                    },
                },
            }
        )
    schemas["FieldTest"] = {"anyOf": tests}

    def clauses(item: dict) -> dict:
        listed = {"type": "array", "maxItems": rules.MAX_CONDITIONS, "items": item}
        names = ("must", "should", "mustNot", "must_not")
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: listed for name in names},
        }

    schemas["InnerFilter"] = clauses({"$ref": "#/components/schemas/FieldTest"})
    schemas["ServedFilter"] = {
        **clauses(
            {
                "anyOf": [
                    {"$ref": "#/components/schemas/FieldTest"},
                    {"$ref": "#/components/schemas/InnerFilter"},
                ]
            }
        ),
        "description": schemas["Filter"].get("description", ""),
    }
    for name in (
        "SearchRequest",
        "SearchBatchRequest",
        "PredictRequest",
        "PredictBatchRequest",
        "ScrollRequest",
    ):
        schemas[name]["properties"]["filter"] = {"$ref": "#/components/schemas/ServedFilter"}
