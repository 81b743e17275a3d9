"""The Open Inference Protocol's ``ModelInfer`` messages, in a descriptor pool of their own.

The gRPC modules of KServe and of tritonclient both register the protocol's ``inference.*``
symbols in protobuf's default pool, and one process cannot hold both (``duplicate symbol``).
The gateway's client needs only ``ModelInferRequest`` and ``ModelInferResponse`` (with raw
tensor contents), so it builds those two here, field numbers as in the protocol's
``grpc_predict_v2.proto``, in a private pool: it imports neither, and works in a process that
has either.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
"""The method path on the wire (package ``inference``, service ``GRPCInferenceService``)."""

_T = descriptor_pb2.FieldDescriptorProto
_FIELD_TYPES = {
    "string": _T.TYPE_STRING,
    "bytes": _T.TYPE_BYTES,
    "int64": _T.TYPE_INT64,
    "bool": _T.TYPE_BOOL,
}


def _message(
    name: str, fields: list[tuple[str, int, str, bool]], nested: tuple[Any, ...] = ()
) -> Any:
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, repeated in fields:
        field = message.field.add(name=field_name, number=number)
        field.label = _T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL
        if kind in _FIELD_TYPES:
            field.type = _FIELD_TYPES[kind]
        else:
            field.type = _T.TYPE_MESSAGE
            field.type_name = kind
    message.nested_type.extend(nested)
    return message


def _messages() -> tuple[Any, Any]:
    entry = _message(
        "ParametersEntry",
        [("key", 1, "string", False), ("value", 2, ".inference.InferParameter", False)],
    )
    tensor = [
        ("name", 1, "string", False),
        ("datatype", 2, "string", False),
        ("shape", 3, "int64", True),
    ]
    file = descriptor_pb2.FileDescriptorProto(
        name="sonolake_inference_client.proto", package="inference", syntax="proto3"
    )
    file.message_type.extend(
        [
            _message(
                "InferParameter",
                [
                    ("bool_param", 1, "bool", False),
                    ("int64_param", 2, "int64", False),
                    ("string_param", 3, "string", False),
                ],
            ),
            _message(
                "ModelInferRequest",
                [
                    ("model_name", 1, "string", False),
                    ("model_version", 2, "string", False),
                    ("id", 3, "string", False),
                    ("inputs", 5, ".inference.ModelInferRequest.InferInputTensor", True),
                    ("raw_input_contents", 7, "bytes", True),
                ],
                (_message("InferInputTensor", tensor),),
            ),
            _message(
                "ModelInferResponse",
                [
                    ("model_name", 1, "string", False),
                    ("model_version", 2, "string", False),
                    ("id", 3, "string", False),
                    ("parameters", 4, ".inference.ModelInferResponse.ParametersEntry", True),
                    ("outputs", 5, ".inference.ModelInferResponse.InferOutputTensor", True),
                    ("raw_output_contents", 6, "bytes", True),
                ],
                (_message("InferOutputTensor", tensor), entry),
            ),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelInferRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelInferResponse")),
    )


ModelInferRequest, ModelInferResponse = _messages()
