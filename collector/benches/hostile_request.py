"""Writes one OTLP ExportTraceServiceRequest (protobuf) holding one span whose
`gen_ai.input.messages` attribute is SIZE_MIB MiB of BYTE, framed as FORM:
`gzip` (an OTLP/HTTP body, gzipped) or `grpc` (a gRPC length-prefixed message).
usage: hostile_request.py OUT FORM BYTE SIZE_MIB   (BYTE as a number, e.g. 1 or 120)"""
import gzip
import struct
import sys


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            return out + bytes([b])
        out += bytes([b | 0x80])


def field(number, payload):  # a length-delimited protobuf field
    return varint(number << 3 | 2) + varint(len(payload)) + payload


out, form, byte, size_mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
value = bytes([byte]) * (size_mib * 1024 * 1024)
attribute = field(1, b"gen_ai.input.messages") + field(2, field(1, value))
span = (field(1, bytes(8) + bytes.fromhex("4bf92f3577b34da6")) + field(2, bytes.fromhex("00f067aa0ba902b7"))
        + field(5, b"chat gpt-4o") + field(9, attribute))
request = field(1, field(2, field(2, span)))  # resource_spans > scope_spans > spans
print(f"body: {len(request)} bytes decompressed")
if form == "gzip":
    body = gzip.compress(request, 9)
elif form == "grpc":
    body = b"\0" + struct.pack(">I", len(request)) + request  # not compressed
else:
    sys.exit(f"unknown form {form}")
open(out, "wb").write(body)
