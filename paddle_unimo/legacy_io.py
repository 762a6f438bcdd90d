"""Reader for Paddle's legacy dense-tensor files: one file per parameter, as the original UNIMO's
static-graph checkpoints (``fluid.io.save_persistables``) store them.

Layout of one file (little-endian):
  uint32  version (0)
  uint64  LoD level count, then for each level: uint64 byte size + that many bytes of size_t offsets
  uint32  tensor version (0)
  int32   byte size of the TensorDesc protobuf, then the protobuf:
            field 1 (varint): data type (VarType.Type), field 2 (repeated int64): dims
  raw data, C order
"""
from __future__ import annotations

import struct

import numpy as np

# VarType.Type values of framework.proto
VAR_TYPE_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32,
                   6: np.float64, 20: np.uint8, 21: np.int8, 23: np.complex64, 24: np.complex128}
BF16 = 22


class LegacyFormatError(ValueError):
    pass


def _varint(buf: bytes, pos: int):
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise LegacyFormatError("truncated varint in TensorDesc")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _parse_tensor_desc(desc: bytes):
    dtype, dims, pos = None, [], 0
    while pos < len(desc):
        key, pos = _varint(desc, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            dtype, pos = _varint(desc, pos)
        elif field == 2 and wire == 0:
            dim, pos = _varint(desc, pos)
            dims.append(dim - (1 << 64) if dim >= 1 << 63 else dim)
        elif field == 2 and wire == 2:  # packed encoding
            size, pos = _varint(desc, pos)
            end = pos + size
            while pos < end:
                dim, pos = _varint(desc, pos)
                dims.append(dim)
        else:
            raise LegacyFormatError(f"unexpected TensorDesc field {field} (wire type {wire})")
    if dtype is None:
        raise LegacyFormatError("TensorDesc has no data type")
    return dtype, dims


def read_dense_tensor(path: str) -> np.ndarray:
    """Reads one legacy parameter file into a numpy array; errors name the file."""
    with open(path, "rb") as f:
        buf = f.read()
    try:
        return _decode(buf)
    except (LegacyFormatError, struct.error) as e:
        raise LegacyFormatError(f"{path}: not a Paddle legacy dense-tensor file ({e})") from None


def widen_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values held as their uint16 bit patterns, as float32 (they are a float32's upper 16 bits)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _decode(buf: bytes) -> np.ndarray:
    pos = 0
    (version,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if version != 0:
        raise LegacyFormatError(f"unsupported version {version}")
    (lod_levels,) = struct.unpack_from("<Q", buf, pos)
    pos += 8
    if lod_levels > 16:
        raise LegacyFormatError(f"implausible LoD level count {lod_levels}")
    for _ in range(lod_levels):
        (size,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + size
    (tensor_version,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if tensor_version != 0:
        raise LegacyFormatError(f"unsupported tensor version {tensor_version}")
    (desc_size,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    if desc_size < 0 or pos + desc_size > len(buf):
        raise LegacyFormatError(f"bad TensorDesc size {desc_size}")
    dtype_code, dims = _parse_tensor_desc(buf[pos:pos + desc_size])
    pos += desc_size
    if dtype_code != BF16 and dtype_code not in VAR_TYPE_DTYPES:
        raise LegacyFormatError(f"unsupported data type code {dtype_code}")
    item = 2 if dtype_code == BF16 else np.dtype(VAR_TYPE_DTYPES[dtype_code]).itemsize
    count = int(np.prod(dims)) if dims else 1
    if len(buf) - pos != count * item:
        raise LegacyFormatError(f"data holds {len(buf) - pos} bytes, dims {dims} need {count * item}")
    if dtype_code == BF16:
        data = widen_bfloat16(np.frombuffer(buf, np.uint16, offset=pos))
    else:
        data = np.frombuffer(buf, VAR_TYPE_DTYPES[dtype_code], offset=pos)
    return data.reshape(dims).copy()
