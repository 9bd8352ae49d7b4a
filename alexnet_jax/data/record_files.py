"""TFRecord files of tf.train.Example protos, read without TensorFlow: the framing, an index of
where each record lies, and the few protobuf wire-format rules an Example needs.

What tensorflow-datasets writes is a sequence of records, each
`length (uint64 LE) | masked crc32c(length) (uint32) | data | masked crc32c(data) (uint32)`.
The index checks every length's checksum, so a file that is not a TFRecord, or is cut short,
is refused with its name; the data checksums are not recomputed (pure Python would spend more
time on them than the JPEG decoding they guard).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from alexnet_jax.common.errors import UserError

HEADER_BYTES = 12  # length + its checksum
FOOTER_BYTES = 4   # the data's checksum


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked checksum: the CRC rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def index_records(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(offsets of the data, lengths) of every record of one TFRecord file, in file order.

    Reads only each record's 12-byte header (unbuffered: a buffered read after every seek
    would read a whole block per record)."""
    offsets, lengths = [], []
    size = os.path.getsize(path)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        position = 0
        while position < size:
            header = os.pread(descriptor, HEADER_BYTES, position)
            if len(header) < HEADER_BYTES:
                raise UserError(f"{path} ends inside a record header at byte {position}: the "
                                "file is incomplete (prepare the data again).")
            length_bytes, checksum = header[:8], struct.unpack("<I", header[8:])[0]
            if masked_crc32c(length_bytes) != checksum:
                raise UserError(f"{path} is not a readable TFRecord file (the record header at "
                                f"byte {position} fails its checksum).")
            length = struct.unpack("<Q", length_bytes)[0]
            end = position + HEADER_BYTES + length + FOOTER_BYTES
            if end > size:
                raise UserError(f"{path} ends inside record {len(offsets)} (needs {end} bytes, "
                                f"has {size}): the file is incomplete (prepare the data again).")
            offsets.append(position + HEADER_BYTES)
            lengths.append(length)
            position = end
    finally:
        os.close(descriptor)
    return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def read_record(path: Path, offset: int, length: int) -> bytes:
    """One record's data (a file opened per call: no descriptors held between reads)."""
    with open(path, "rb", buffering=0) as file:
        data = os.pread(file.fileno(), length, offset)
    if len(data) != length:
        raise UserError(f"{path} is shorter than its index says (record at byte {offset}): "
                        "the file changed after the run started.")
    return data


def _varint(buffer, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise ValueError("a varint runs past the end of its message")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _fields(buffer: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one protobuf message: ints for varints, views of
    the bytes (no copies) for fixed widths and length-delimited fields."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            value, position = buffer[position:position + length], position + length
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            value, position = buffer[position:position + width], position + width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if position > end:
            raise ValueError("a field runs past the end of its message")
        yield number, wire_type, value


def _message(number: int, wire_type: int, value) -> memoryview:
    """A length-delimited field's bytes; ValueError for a field of another wire type where an
    Example's schema has a message or bytes (a damaged record)."""
    if wire_type != 2:
        raise ValueError(f"field {number} has wire type {wire_type} where bytes are expected")
    return value


def _int64s(field_values: list[tuple[int, int | bytes]]) -> list[int]:
    values = []
    for wire_type, value in field_values:
        if wire_type == 2:  # packed
            position = 0
            while position < len(value):
                number, position = _varint(value, position)
                values.append(number)
        elif wire_type == 0:
            values.append(value)
        else:
            raise ValueError(f"an int64 list holds a field of wire type {wire_type}")
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _floats(field_values: list[tuple[int, int | bytes]]) -> list[float]:
    if any(wire_type not in (2, 5) for wire_type, _ in field_values):
        raise ValueError("a float list holds a field that is neither packed nor 4 bytes")
    raw = b"".join(value for _, value in field_values)  # packed, or 4 bytes each
    if len(raw) % 4:
        raise ValueError("a float list's length is not a multiple of 4 bytes")
    return np.frombuffer(raw, "<f4").tolist()


def parse_example(serialized: bytes) -> dict[str, list]:
    """A tf.train.Example as {feature name: list of bytes, floats or ints}; ValueError if
    the bytes are not one."""
    features = {}
    for number, wire_type, message in _fields(memoryview(serialized)):
        if number != 1:
            continue
        # Features.feature: a map of entries (key 1, value 2)
        for entry_number, entry_type, entry in _fields(_message(number, wire_type, message)):
            if entry_number != 1:
                continue
            name, values = "", []
            for part_number, part_type, part in _fields(_message(1, entry_type, entry)):
                if part_number == 1:
                    name = bytes(_message(1, part_type, part)).decode()
                elif part_number == 2:
                    values = _feature_values(_message(2, part_type, part))
            features[name] = values
    return features


def _feature_values(feature: memoryview) -> list:
    for kind, wire_type, value_list in _fields(feature):  # oneof bytes/float/int64 list
        if kind not in (1, 2, 3):
            continue
        values = [(value_type, value) for number, value_type, value
                  in _fields(_message(kind, wire_type, value_list)) if number == 1]
        if kind == 1:
            return [bytes(_message(1, value_type, value)) for value_type, value in values]
        if kind == 2:
            return _floats(values)
        return _int64s(values)
    return []
