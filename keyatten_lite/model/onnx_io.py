"""Graph inputs and outputs read straight from the ONNX protobuf (memory-mapped), without onnx or
onnxruntime: opening a bundle checks its graph's I/O against bundle.json before creating a session."""

from __future__ import annotations

import mmap
import os
from typing import Any

# ONNX TensorProto.DataType codes -> numpy-style names used in the manifest.
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}




class _Proto:
    """Just enough of the protobuf wire format to walk ModelProto -> GraphProto -> ValueInfoProto."""

    def __init__(self, buf, start: int = 0, end: int | None = None):
        self.buf = buf
        self.start = start
        self.end = len(buf) if end is None else end

    def _varint(self, pos: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            if pos >= self.end:
                raise ValueError("truncated varint")
            byte = self.buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result, pos
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def fields(self):
        """Yield (field number, wire type, value); value is an int or a (start, end) slice."""
        pos = self.start
        while pos < self.end:
            key, pos = self._varint(pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = self._varint(pos)
            elif wire == 1:
                value, pos = None, pos + 8
            elif wire == 5:
                value, pos = None, pos + 4
            elif wire == 2:
                length, pos = self._varint(pos)
                value, pos = (pos, pos + length), pos + length
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if pos > self.end:
                raise ValueError("field runs past its message")
            yield number, wire, value

    def sub(self, span: tuple[int, int]) -> "_Proto":
        return _Proto(self.buf, span[0], span[1])

    def text(self, span: tuple[int, int]) -> str:
        return bytes(self.buf[span[0] : span[1]]).decode("utf-8")


def _value_info(msg: _Proto) -> dict:
    name, dtype, shape = None, None, None
    for number, wire, value in msg.fields():
        if number == 1 and wire == 2:
            name = msg.text(value)
        elif number == 2 and wire == 2:  # TypeProto
            for t_number, t_wire, t_value in msg.sub(value).fields():
                if t_number == 1 and t_wire == 2:  # tensor_type
                    for s_number, s_wire, s_value in msg.sub(t_value).fields():
                        if s_number == 1 and s_wire == 0:
                            dtype = _ONNX_DTYPES.get(s_value, f"onnx:{s_value}")
                        elif s_number == 2 and s_wire == 2:  # TensorShapeProto
                            shape = []
                            for d_number, d_wire, d_value in msg.sub(s_value).fields():
                                if d_number != 1 or d_wire != 2:
                                    continue
                                dim: Any = None
                                for x_number, x_wire, x_value in msg.sub(d_value).fields():
                                    if x_number == 1 and x_wire == 0:
                                        dim = x_value
                                    elif x_number == 2 and x_wire == 2:
                                        dim = msg.text(x_value)
                                shape.append(dim)
    return {"name": name, "dtype": dtype, "shape": shape}


def read_onnx_io(path: str | os.PathLike) -> dict:
    """``{"inputs": [...], "outputs": [...]}`` of an ONNX file, each ``{name, dtype, shape}``.

    Initialisers that older exporters also list as graph inputs are left out.
    """
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ValueError("empty file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            model = _Proto(buf)
            graph = None
            for number, wire, value in model.fields():
                if number == 7 and wire == 2:
                    graph = model.sub(value)
            if graph is None:
                raise ValueError("no graph in the model")
            inputs, outputs, initializers = [], [], set()
            for number, wire, value in graph.fields():
                if wire != 2:
                    continue
                if number == 11:
                    inputs.append(_value_info(graph.sub(value)))
                elif number == 12:
                    outputs.append(_value_info(graph.sub(value)))
                elif number == 5:  # TensorProto: name is field 8
                    for t_number, t_wire, t_value in graph.sub(value).fields():
                        if t_number == 8 and t_wire == 2:
                            initializers.add(graph.text(t_value))
            return {
                "inputs": [spec for spec in inputs if spec["name"] not in initializers],
                "outputs": outputs,
            }
