"""Building blocks for the checkpoint fuzz tests: the released files' layout (zip members, where each part
starts and ends), hand-assembled pickles (protocol 2 opcodes, so that any global or call can be written down
without importing it), torch zip archives and safetensors files."""
import functools
import io
import json
import pickletools
import struct
import zipfile

import torch

from tests.conftest import FIXTURES

LM = FIXTURES / "music10" / "state_dict.bin"
CODEC = FIXTURES / "music10" / "compression_state_dict.bin"


@functools.lru_cache(maxsize=None)
def raw(path) -> bytes:
    return path.read_bytes()


@functools.lru_cache(maxsize=None)
def package(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@functools.lru_cache(maxsize=None)
def layout(path) -> dict:
    """Byte offsets in a torch zip: 'boundaries' (every local header, member data start and end, the central
    directory, the end record, every opcode of data.pkl) and the 'pickle' and 'tensors' regions."""
    data = raw(path)
    archive = zipfile.ZipFile(io.BytesIO(data))
    boundaries, tensors, pickle_region = {0, len(data)}, [], None
    for info in archive.infolist():
        start = info.header_offset + 30 + len(info.filename.encode()) + \
            struct.unpack("<H", data[info.header_offset + 28:info.header_offset + 30])[0]
        end = start + info.compress_size
        boundaries |= {info.header_offset, start, end}
        if info.filename.endswith("data.pkl"):
            pickle_region = (start, end)
            boundaries |= {start + pos for _, _, pos in pickletools.genops(data[start:end])}
        elif "/data/" in info.filename:
            tensors.append((start, end))
    boundaries |= {archive.start_dir, data.rfind(b"PK\x05\x06"), data.rfind(b"PK\x06\x06")} - {-1}
    return dict(boundaries=sorted(boundaries), pickle=pickle_region, tensors=tensors, size=len(data))


def members(path):
    """[(name, bytes)] of a torch zip."""
    archive = zipfile.ZipFile(io.BytesIO(raw(path)))
    return [(info.filename, archive.read(info)) for info in archive.infolist()]


def zip_of(items, compress=()) -> bytes:
    """A zip archive of [(name, bytes)]; the members named in `compress` deflated (torch.save never does)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for name, data in items:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
            out.writestr(info, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- pickles
def op_str(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(n: int) -> bytes:
    if 0 <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    body = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return (b"\x8a" + bytes([len(body)]) if len(body) < 256 else b"\x8b" + struct.pack("<i", len(body))) + body


def op_value(value) -> bytes:
    """Opcodes that push `value` (str, int, bool, None, or a list/tuple of those)."""
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if value is None:
        return b"N"
    if isinstance(value, int):
        return op_int(value)
    if isinstance(value, str):
        return op_str(value)
    if isinstance(value, list):
        return b"](" + b"".join(op_value(v) for v in value) + b"e"
    return b"(" + b"".join(op_value(v) for v in value) + b"t"


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call(module: str, name: str, args: tuple, style: str) -> bytes:
    """Opcodes that call module.name(*args) when unpickled, by each route the pickle format offers."""
    pushed = b"".join(op_value(a) for a in args)
    if style == "reduce":
        return op_global(module, name) + b"(" + pushed + b"tR"
    if style == "stack_global":  # protocol 4's STACK_GLOBAL: the names as strings on the stack
        return op_str(module) + op_str(name) + b"\x93(" + pushed + b"tR"
    if style == "inst":
        return b"(" + pushed + b"i" + module.encode() + b"\n" + name.encode() + b"\n"
    if style == "obj":
        return b"(" + op_global(module, name) + pushed + b"o"
    if style == "newobj":
        return op_global(module, name) + b"(" + pushed + b"t\x81"
    if style == "build":  # an allowed object whose state is set from the call's result
        return op_global("collections", "OrderedDict") + b")R" + op_global(module, name) + b"(" + pushed + b"tRb"
    if style == "persid":  # the call's result as a tensor storage's persistent id
        return op_global(module, name) + b"(" + pushed + b"tRQ"
    raise ValueError(style)


CALL_STYLES = ("reduce", "stack_global", "inst", "obj", "newobj", "build", "persid")


def wrap(payload: bytes, where: str) -> bytes:
    """A whole pickle with `payload` at the top, as a dict value, or added to the real LM checkpoint's dict."""
    if where == "top":
        return b"\x80\x02" + payload + b"."
    if where == "dict":
        return b"\x80\x02}" + op_str("xp.cfg") + payload + b"s."
    real = dict(members(LM))["state_dict/data.pkl"]
    assert real.endswith(b".")
    return real[:-1] + op_str("payload") + payload + b"s."


def torch_zip(pickle_bytes: bytes, records=None, prefix="archive") -> bytes:
    """A zip in torch.save's layout around a data.pkl (and data/<key> records)."""
    items = [(f"{prefix}/data.pkl", pickle_bytes), (f"{prefix}/byteorder", b"little")]
    items += [(f"{prefix}/data/{k}", v) for k, v in (records or {}).items()]
    items += [(f"{prefix}/version", b"3\n"), (f"{prefix}/.data/serialization_id", b"0")]
    return zip_of(items)


def tensor_pickle(storage="FloatStorage", key="0", location="cpu", numel=7, offset=0, size=(7,), stride=(1,),
                  requires_grad=False) -> bytes:
    """{'a': torch._utils._rebuild_tensor_v2(<storage persistent id>, offset, size, stride, ...)} with every
    field free, e.g. a storage that claims more elements than its record holds."""
    pid = op_value(("storage",))[:-1] + op_global("torch", storage) + op_str(key) + op_str(location) + \
        op_int(numel) + b"t"
    args = b"(" + pid + b"Q" + op_int(offset) + op_value(tuple(size)) + op_value(tuple(stride)) + \
        op_value(requires_grad) + op_global("collections", "OrderedDict") + b")Rt"
    return b"\x80\x02}" + op_str("a") + op_global("torch._utils", "_rebuild_tensor_v2") + args + b"Rs."


# ---------------------------------------------------------------------------------------------- safetensors
@functools.lru_cache(maxsize=None)
def safetensors_parts():
    """(header dict, tensor bytes) of the music10 LM saved as model.safetensors (xp.cfg in the metadata)."""
    from safetensors.torch import save

    pkg = package(LM)
    data = save(pkg["best_state"], metadata={"xp.cfg": pkg["xp.cfg"]})
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def safetensors_file(header, body: bytes, length=None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + body
