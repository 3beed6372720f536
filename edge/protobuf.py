"""The few protobuf pieces the edge needs, without the ``onnx`` package.

The edge cannot import ``onnx`` (a device has only onnxruntime, which does not parse
TensorProto files), yet it must read and write golden tensors and hash a model's graph. The
protobuf wire format is small: every field is a varint key ``(field_number << 3) | wire_type``
followed by a varint or a length-prefixed payload.

* TensorProto: dims, data_type, name, raw_data are written (float_data / int32_data /
  int64_data are also read). The writer emits fields in field-number order, exactly as
  ``onnx.numpy_helper`` does, so its bytes are identical (a test checks this).
* ModelProto: :func:`graph_sha256` hashes the serialized graph (field 7) and opset imports
  (field 8) of a model file, i.e. everything that decides its outputs, but not its
  ``metadata_props`` (field 14) - so a model card stored in the metadata can carry the hash.
"""

from __future__ import annotations

import hashlib

import numpy as np

# TensorProto.DataType codes (onnx.proto) <-> numpy dtypes.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 11: np.float64}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


# ---------------------------------------------------------------- protobuf wire format
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 are ten-byte two's complement on the wire
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for a serialized message.

    value is an int for varint fields and bytes for length-delimited / fixed fields.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value = buf[pos:pos + length]
            if len(value) != length:
                raise ValueError("truncated field")
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value = buf[pos:pos + width]
            if len(value) != width:
                raise ValueError("truncated field")
            pos += width
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _packed_varints(payload: bytes) -> list:
    out, pos = [], 0
    while pos < len(payload):
        v, pos = _read_varint(payload, pos)
        out.append(v)
    return out


# ---------------------------------------------------------------- TensorProto
def tensor_to_bytes(array: np.ndarray, name: str = "") -> bytes:
    """Serialize an array as an ONNX TensorProto (dims, data_type, name, raw_data).

    Parameters
    ----------
    array : ndarray of float32, float64, uint8, int8, int32 or int64, any shape
    name : str
        Tensor name (omitted when empty, as onnx does).

    Returns
    -------
    bytes
        Identical to ``onnx.numpy_helper.from_array(array, name).SerializeToString()``.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"unsupported tensor dtype {array.dtype}")
    out = bytearray()
    for d in array.shape:  # field 1, repeated int64, unpacked (proto2 default)
        out += b"\x08" + _varint(int(d))
    out += b"\x10" + _varint(code)  # field 2: data_type
    if name:
        raw_name = name.encode("utf-8")
        out += b"\x42" + _varint(len(raw_name)) + raw_name  # field 8: name
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    out += b"\x4a" + _varint(len(raw)) + raw  # field 9: raw_data
    return bytes(out)


def tensor_from_bytes(buf: bytes):
    """Parse a serialized TensorProto.

    Returns
    -------
    name : str
    array : ndarray with the tensor's dtype and dims

    Raises
    ------
    ValueError
        Malformed bytes, an unsupported data type, or a size that does not match the dims.
    """
    dims, code, name, raw, typed = [], None, "", None, []
    for number, wire, value in _fields(bytes(buf)):
        if number == 1:
            dims += _packed_varints(value) if wire == 2 else [value]
        elif number == 2:
            code = value
        elif number == 8:
            name = value.decode("utf-8")
        elif number == 9:
            raw = value
        elif number in (4, 5, 7):  # float_data / int32_data / int64_data
            typed.append((number, wire, value))
        elif number == 14 and value == 1:  # data_location EXTERNAL
            raise ValueError("tensors with external data are not supported")
    if code not in _DTYPES:
        raise ValueError(f"unsupported TensorProto data_type {code}")
    dtype = np.dtype(_DTYPES[code])
    dims = [_signed64(d) for d in dims]
    data = _decode_data(raw, typed, dtype)
    if data.size != int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"tensor {name!r}: {data.size} values for dims {dims}")
    return name, data.reshape(dims)


def _decode_data(raw, typed, dtype: np.dtype) -> np.ndarray:
    if raw is not None:
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    values = []
    for number, wire, value in typed:
        if number == 4:  # float_data: packed fixed32, or one fixed32 per field
            values += np.frombuffer(value, dtype="<f4").tolist()
        else:  # int32_data / int64_data: varints, negatives sign-extended to 64 bits
            values += [_signed64(v) for v in (_packed_varints(value) if wire == 2 else [value])]
    return np.asarray(values, dtype=dtype)


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- ModelProto
_GRAPH, _OPSET = 7, 8  # ModelProto field numbers (onnx.proto)


def graph_sha256(model_bytes: bytes) -> str:
    """Hex SHA-256 of an ONNX model's graph and opset imports, metadata excluded.

    Hashes the raw bytes of every top-level ``graph`` (7) and ``opset_import`` (8) field in
    file order, each prefixed by its field number and length. Only the top level is walked:
    the graph is one length-delimited field, so this is one pass of hashing, no parsing.

    Raises
    ------
    ValueError
        The bytes are not a protobuf message, or have no graph.
    """
    h, found = hashlib.sha256(), False
    for number, wire, value in _fields(bytes(model_bytes)):
        if number in (_GRAPH, _OPSET) and wire == 2:
            h.update(f"{number}:{len(value)}:".encode())
            h.update(value)
            found |= number == _GRAPH
    if not found:
        raise ValueError("no graph in this ONNX file")
    return h.hexdigest()
