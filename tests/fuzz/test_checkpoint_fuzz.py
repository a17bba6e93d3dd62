"""Fuzzed checkpoints (openmagnet/checkpoint.py, config.py): the released layout (state_dict.bin /
compression_state_dict.bin, torch zips with xp.cfg inside) and model.safetensors, broken every way a download,
a disk or an attacker can break them. Each case either loads or raises one CheckpointError (a ValueError) on one
line naming the file; never another exception, never a hang, never code from the file."""
import copy
import json
import math
import os
import struct
import warnings

import pytest
import torch
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from openmagnet.checkpoint import (TEXT_PROJ_KEY, CheckpointError, codec_from_package, lm_from_package, load_package,
                                   parse_xp_cfg)
from openmagnet.config import generation_from_xp
from tests.fuzz import ckpt
from tests.fuzz.conftest import budget, check_one_line, guard, out_of_time

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


def build(pkg, source, kind):
    """The model a loaded package makes (the checks run by MAGNeT.get_pretrained, in its order)."""
    if kind == "lm":
        lm_from_package(pkg, source, CPU, torch.float32)
        try:
            generation_from_xp(parse_xp_cfg(pkg["xp.cfg"], source))
        except ValueError as exc:  # get_pretrained prefixes the file, as here
            raise CheckpointError(f"{source}: {exc}") from None
    else:
        codec_from_package(pkg, source, CPU)


def load_file(path, kind):
    """load_package + build; returns the error (checked) or None."""
    try:
        build(load_package(path), str(path), kind)
    except Exception as exc:  # noqa: BLE001 - whatever it is, check_one_line judges it
        check_one_line(exc, str(path), types=CheckpointError)
        return exc
    return None


FILES = {"lm": ckpt.LM, "codec": ckpt.CODEC}
kinds = st.sampled_from(sorted(FILES))


# ---------------------------------------------------------------------------------------------- bytes
@budget(15, 5000)
@given(data=st.binary(max_size=4096), name=st.sampled_from(["state_dict.bin", "model.safetensors"]))
def test_random_bytes(folder, data, name):
    out_of_time("ckpt: random bytes")
    path = folder / name
    path.write_bytes(data)
    with guard("ckpt: random bytes"):
        assert load_file(path, "lm") is not None


@budget(15, 5000)
@given(kind=kinds, index=st.integers(min_value=0), shift=st.integers(-2, 2))
def test_truncated_at_every_kind_of_boundary(folder, kind, index, shift):
    """Cut at (or next to) a zip local header, a member's data start or end, the central directory, the end
    record, or any opcode of the pickle."""
    out_of_time("ckpt: truncation")
    layout = ckpt.layout(FILES[kind])
    cut = layout["boundaries"][index % len(layout["boundaries"])] + shift
    assume(0 <= cut < layout["size"])
    path = folder / f"{kind}.bin"
    path.write_bytes(ckpt.raw(FILES[kind])[:cut])
    with guard("ckpt: truncation"):
        assert load_file(path, kind) is not None


@budget(12, 5000)
@given(kind=kinds, region=st.sampled_from(["anywhere", "pickle", "tensors", "zip records"]),
       flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flips(folder, kind, region, flips):
    out_of_time("ckpt: bit flips")
    layout = ckpt.layout(FILES[kind])
    data = bytearray(ckpt.raw(FILES[kind]))
    for position, bit in flips:
        if region == "pickle":
            start, end = layout["pickle"]
        elif region == "tensors":
            start, end = layout["tensors"][position % len(layout["tensors"])]
        elif region == "zip records":  # the bytes just after each boundary: headers, sizes, names
            start = layout["boundaries"][position % len(layout["boundaries"])]
            end = min(start + 64, len(data))
        else:
            start, end = 0, len(data)
        if end > start:
            data[start + position % (end - start)] ^= 1 << bit
    path = folder / f"{kind}.bin"
    path.write_bytes(bytes(data))
    with guard("ckpt: bit flips"):
        load_file(path, kind)  # may load (a flip in a mantissa), else the one-line error


member_edits = st.lists(st.tuples(
    st.sampled_from(["drop", "duplicate", "add", "rename", "compress", "empty", "swap"]),
    st.integers(min_value=0),
    st.sampled_from(["x", "../../evil", "/abs/path", "state_dict/data/999", "state_dict/data.pkl", "archive/data.pkl",
                     "state_dict/byteorder", "state_dict/.format_version", "\u00e9\u4e2d", "a" * 300, "dir/"])),
    min_size=1, max_size=4)


@budget(15, 5000)
@given(kind=kinds, edits=member_edits, content=st.binary(max_size=64))
def test_zip_members_extra_missing_renamed_or_compressed(folder, kind, edits, content):
    out_of_time("ckpt: zip members")
    items = ckpt.members(FILES[kind])
    compress = set()
    for op, i, name in edits:
        i %= len(items)
        if op == "drop":
            items.pop(i)
        elif op == "duplicate":
            items.append(items[i])
        elif op == "add":
            items.append((name, content))
        elif op == "rename":
            items[i] = (name, items[i][1])
        elif op == "compress":
            compress.add(items[i][0])
        elif op == "empty":
            items[i] = (items[i][0], b"")
        else:
            items[i], items[-1] = items[-1], items[i]
        if not items:
            break
    path = folder / f"{kind}.bin"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names
            path.write_bytes(ckpt.zip_of(items, compress))
    except ValueError:  # a name zipfile itself refuses
        assume(False)
    with guard("ckpt: zip members"):
        err = load_file(path, kind)
    if compress & {name for name, _ in items}:
        assert err is not None and "compressed" in str(err)


# ---------------------------------------------------------------------------------------------- pickles
def attacks(marker):
    """(module, name, args): calls that, if ever run, create `marker` (or import a module)."""
    m = str(marker)
    code = f"open({m!r}, 'w').close()"
    return [("posix", "system", (f"touch {m}",)), ("os", "system", (f"touch {m}",)), ("os", "popen", (f"touch {m}",)),
            ("builtins", "eval", (code,)), ("builtins", "exec", (code,)), ("builtins", "open", (m, "w")),
            ("io", "open", (m, "w")), ("pathlib", "Path", (m,)), ("subprocess", "check_call", (["touch", m],)),
            ("subprocess", "Popen", (["touch", m],)), ("builtins", "__import__", ("antigravity",)),
            ("importlib", "import_module", ("this",)), ("runpy", "run_path", (m,)), ("pty", "spawn", (["touch", m],)),
            ("torch", "load", (m,)), ("torch.serialization", "add_safe_globals", ([],)),
            ("builtins", "getattr", ("os", "system")), ("numpy", "load", (m,)),
            ("shutil", "copyfile", ("/etc/hostname", m)),
            ("torch._C", "_jit_set_profiling_executor", (True,)), ("torch.hub", "load", ("x/y", "z"))]


@budget(15, 5000)
@given(data=st.data(), style=st.sampled_from(ckpt.CALL_STYLES), where=st.sampled_from(["top", "dict", "real"]))
def test_pickles_outside_the_allow_list_are_refused_and_never_run(folder, data, style, where):
    marker = folder / "MARKER"
    marker.unlink(missing_ok=True)
    module, name, args = data.draw(st.sampled_from(attacks(marker)))
    path = folder / "state_dict.bin"
    path.write_bytes(ckpt.torch_zip(ckpt.wrap(ckpt.call(module, name, args, style), where),
                                    prefix="state_dict") if where != "real" else
                     ckpt.zip_of([(n, ckpt.wrap(ckpt.call(module, name, args, style), where) if n.endswith("data.pkl")
                                   else b) for n, b in ckpt.members(ckpt.LM)]))
    with guard("ckpt: malicious pickles"):
        with pytest.raises(CheckpointError) as err:
            load_package(path)
    message = check_one_line(err.value, str(path))
    assert "refused" in message and "weights_only=False" not in message
    assert not marker.exists(), f"{module}.{name} ran"


tensor_fields = st.fixed_dictionaries({
    "storage": st.sampled_from(["FloatStorage", "HalfStorage", "BoolStorage", "ComplexFloatStorage", "QInt8Storage",
                                "LongStorage", "BFloat16Storage", "Storage", "UntypedStorage", "ByteStorage"]),
    "key": st.sampled_from(["0", "1", "../0", "", "0/../0"]),
    "location": st.sampled_from(["cpu", "meta", "cuda", "cuda:7", "mps", "xla", "", "\x00"]),
    "numel": st.one_of(st.integers(-2, 40), st.sampled_from([2 ** 31, 2 ** 40, 2 ** 63 - 1, 2 ** 64])),
    "offset": st.one_of(st.integers(-2, 10), st.sampled_from([2 ** 40, 2 ** 62])),
    "size": st.lists(st.one_of(st.integers(-1, 9), st.sampled_from([2 ** 31, 2 ** 62])), max_size=3),
    "stride": st.lists(st.one_of(st.integers(-1, 9), st.sampled_from([2 ** 40])), max_size=3),
    "requires_grad": st.booleans(),
})


@budget(15, 5000)
@given(fields=tensor_fields, record=st.binary(max_size=64))
def test_tensor_records_that_lie(folder, fields, record):
    """A storage's element count, the tensor's offset, size, stride, dtype, device or record name lie."""
    out_of_time("ckpt: tensor records")
    path = folder / "state_dict.bin"
    path.write_bytes(ckpt.torch_zip(ckpt.tensor_pickle(**fields), {"0": record}))
    with guard("ckpt: tensor records"):
        try:
            pkg = load_package(path)
        except CheckpointError as exc:
            check_one_line(exc, str(path))
            return
        with pytest.raises(CheckpointError) as err:  # a dict, but no MAGNeT checkpoint
            build(pkg, str(path), "lm")
        check_one_line(err.value, str(path))


# ---------------------------------------------------------------------------------------------- package contents
def odd_values():
    return st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=4),
                     st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                     st.sampled_from([torch.zeros(()), torch.zeros(0), torch.zeros(3, dtype=torch.int32),
                                      torch.empty(2, 2, device="meta"), torch.full((2,), math.nan)]))


tensor_edits = st.sampled_from(["int16", "int64", "bool", "uint8", "complex64", "float64", "bfloat16", "meta", "nan",
                                "inf", "flatten", "transpose", "unsqueeze", "sparse", "quantized", "value", "key"])


def edit_tensor(state, key, how, value):
    v = state[key]
    if how in ("int16", "int64", "bool", "uint8", "complex64", "float64", "bfloat16"):
        state[key] = v.to(getattr(torch, how))
    elif how == "meta":
        state[key] = torch.empty(v.shape, dtype=v.dtype, device="meta")
    elif how in ("nan", "inf"):
        state[key] = v.clone().view(-1).index_fill_(0, torch.tensor([0]), math.nan if how == "nan" else -math.inf
                                                    ).view(v.shape)
    elif how == "flatten":
        state[key] = v.reshape(-1)
    elif how == "transpose":
        state[key] = v.t() if v.dim() == 2 else v[None]
    elif how == "unsqueeze":
        state[key] = v[None]
    elif how == "sparse":
        state[key] = v.float().to_sparse()
    elif how == "quantized":
        state[key] = torch.quantize_per_tensor(v.float(), 0.1, 0, torch.qint8)
    elif how == "value":
        state[key] = value
    else:
        state[value if isinstance(value, (int, str, bool, type(None), float)) else 7] = state.pop(key)


@budget(15, 3000)
@given(kind=kinds, data=st.data(), edits=st.lists(st.tuples(st.integers(min_value=0), tensor_edits, odd_values()),
                                                  min_size=1, max_size=3))
def test_tensors_of_the_wrong_kind(kind, data, edits):
    """Each tensor may come back as ints, complex, meta, NaN, sparse, quantized, another shape, or no tensor."""
    pkg = dict(ckpt.package(FILES[kind]))
    state = dict(pkg["best_state"])
    for index, how, value in edits:
        keys = sorted(k for k in state if isinstance(k, str))
        try:
            edit_tensor(state, keys[index % len(keys)], how, value)
        except (RuntimeError, NotImplementedError, TypeError, AttributeError):  # an edit that cannot be made
            # (a NaN in ints, int16 of what an earlier edit made None, ...)
            pass
    pkg["best_state"] = state
    with guard("ckpt: tensor kinds"):
        try:
            build(pkg, "SOURCE", kind)
        except Exception as exc:  # noqa: BLE001
            check_one_line(exc, "SOURCE", types=CheckpointError)


@budget(12, 3000)
@given(kind=kinds, key=st.sampled_from(["best_state", "xp.cfg", "pretrained", "version", "exported", 7]),
       action=st.sampled_from(["drop", "set"]), value=odd_values())
def test_package_entries(kind, key, action, value):
    out_of_time("ckpt: package entries")
    pkg = dict(ckpt.package(FILES[kind]))
    if action == "drop":
        pkg.pop(key, None)
    else:
        pkg[key] = value
    with guard("ckpt: package entries"):
        try:
            build(pkg, "SOURCE", kind)
        except Exception as exc:  # noqa: BLE001
            check_one_line(exc, "SOURCE", types=CheckpointError)


# ---------------------------------------------------------------------------------------------- xp.cfg
def yaml_values():
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from([10 ** 30, -(10 ** 30), 2 ** 63]),
                       st.floats(), st.text(max_size=10),
                       st.sampled_from(["${dataset.x}", "nan", "1e400", "32", "ELU"]))
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) |
                        st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def paths(node, prefix=()):
    for key, value in node.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from paths(value, prefix + (key,))


@budget(20, 3000)
@given(kind=kinds, data=st.data())
def test_xp_cfg_wrong_types(kind, data):
    """Any field of xp.cfg (or a new one) of any type: wrong types, huge numbers, NaN, interpolations."""
    pkg = dict(ckpt.package(FILES[kind]))
    cfg = copy.deepcopy(yaml.safe_load(pkg["xp.cfg"]))
    all_paths = sorted(paths(cfg), key=str) + [("openmagnet", "generation"), ("openmagnet", "generation", "top_k"),
                                                ("openmagnet", "generation", "decoding_steps")]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(all_paths))
        node = cfg
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = data.draw(yaml_values())
    pkg["xp.cfg"] = yaml.safe_dump(cfg)
    with guard("ckpt: xp.cfg types"):
        try:
            build(pkg, "SOURCE", kind)
        except Exception as exc:  # noqa: BLE001
            check_one_line(exc, "SOURCE", types=CheckpointError)


def laughs(depth: int, width: int, field: str) -> str:
    """A billion-laughs YAML: `depth` levels of `width` aliases each, the last one in `field`."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for k in range(1, depth):
        lines.append(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * width) + "]")
    return "\n".join(lines) + f"\n{field}: *l{depth - 1}\n"


@budget(12, 3000)
@given(kind=kinds, data=st.data(), form=st.sampled_from(["laughs", "merge", "deep", "recursive", "text", "tags"]))
def test_xp_cfg_hostile_yaml(kind, data, form):
    """Alias bombs (billion laughs, merge keys), deep nesting, recursive aliases, arbitrary text, object tags."""
    pkg = dict(ckpt.package(FILES[kind]))
    base = pkg["xp.cfg"]
    if form == "laughs":
        cfg = yaml.safe_load(base)
        path = data.draw(st.sampled_from(sorted(paths(cfg), key=str) + [("openmagnet", "generation")]))
        node = cfg
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[path[-1]] = "__BOMB__"
        depth, width = data.draw(st.integers(2, 12)), data.draw(st.integers(2, 10))
        text = laughs(depth, width, "bomb") + yaml.safe_dump(cfg).replace("__BOMB__", f"*l{depth - 1}")
    elif form == "merge":
        depth = data.draw(st.integers(2, 12))
        text = "m0: &m0 {a: 1, b: 2}\n" + "".join(
            f"m{k}: &m{k}\n  <<: [{', '.join([f'*m{k - 1}'] * 9)}]\n  k{k}: 1\n" for k in range(1, depth)) + base
    elif form == "deep":
        n = data.draw(st.integers(100, 20000))
        text = base + "\ndeep: " + "[" * n + "]" * n + "\n"
    elif form == "recursive":
        text = base + "\nloop: &loop [*loop]\nmap: &map {self: *map}\n"
    elif form == "tags":
        tag = data.draw(st.sampled_from(["!!python/object/apply:os.system ['touch x']", "!!python/name:os.system",
                                         "!!binary aGVsbG8=", "!!timestamp 2001-13-45", "!!set {a, b}",
                                         "!!float 1e400", "!!int " + "9" * 5000]))
        text = base.replace("lm_model: transformer_lm_magnet", f"lm_model: {tag}")
    else:
        text = data.draw(st.text(max_size=400))
    pkg["xp.cfg"] = text
    with guard("ckpt: hostile yaml"):
        try:
            build(pkg, "SOURCE", kind)
        except Exception as exc:  # noqa: BLE001
            check_one_line(exc, "SOURCE", types=CheckpointError)
    assert not os.path.exists("x")


# ---------------------------------------------------------------------------------------------- safetensors
SAFETENSORS_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E5M2", "F8_E4M3",
                      "U16", "U32", "U64", "C64", "F4", "F6_E2M3", "E8M0", "XX", "", 7]


@budget(15, 5000)
@given(data=st.data(),
       lie=st.sampled_from(["dtype", "shape", "offsets", "length", "metadata", "drop", "extra", "json"]))
def test_safetensors_headers_that_lie(folder, data, lie):
    header, body = ckpt.safetensors_parts()
    header = copy.deepcopy(header)
    keys = sorted(k for k in header if k != "__metadata__")
    key = data.draw(st.sampled_from(keys))
    length = None
    raw_header = None
    if lie == "dtype":
        header[key]["dtype"] = data.draw(st.sampled_from(SAFETENSORS_DTYPES))
    elif lie == "shape":
        header[key]["shape"] = data.draw(st.lists(
            st.one_of(st.integers(-1, 70000), st.sampled_from([2 ** 40, 2 ** 64])), max_size=4))
    elif lie == "offsets":
        header[key]["data_offsets"] = data.draw(st.lists(st.one_of(st.integers(-1, len(body) + 10),
                                                                   st.sampled_from([2 ** 40, 2 ** 64 - 1])),
                                                         max_size=3))
    elif lie == "length":
        length = data.draw(st.one_of(st.integers(0, 10 ** 6), st.sampled_from([2 ** 31, 2 ** 40, 2 ** 64 - 1])))
    elif lie == "metadata":
        header["__metadata__"] = data.draw(st.one_of(
            st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=3),
            st.just({"xp.cfg": laughs(10, 9, "transformer_lm")}), st.just({"xp.cfg": "x" * 2_000_000}),
            st.integers(), st.none()))
    elif lie == "drop":
        header.pop(key)
    elif lie == "extra":
        header[data.draw(st.text(max_size=10))] = data.draw(st.one_of(
            st.just({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}), st.integers(), st.text(max_size=5)))
    else:
        raw_header = data.draw(st.sampled_from([b"{", b"[]", b"null", json.dumps(header).encode()[:-1] + b',"a":{}}',
                                                 b'{"a": 1, "a": 2}', b"\xff\xfe", b" " * 100]))
    assume(length is None or length != len(json.dumps(header).encode()))
    path = folder / "model.safetensors"
    path.write_bytes(ckpt.safetensors_file(raw_header if raw_header is not None else header, body, length))
    with guard("ckpt: safetensors"):
        load_file(path, "lm")


@pytest.mark.parametrize("dtype", ["F8_E5M2", "F8_E4M3", "F4", "E8M0", "C64", "XX"])
def test_safetensors_dtypes_torch_cannot_make(folder, dtype):
    """Every dtype a header may name that torch lacks (or that is no dtype): one CheckpointError."""
    header, body = ckpt.safetensors_parts()
    header = copy.deepcopy(header)
    header["out_norm.weight"]["dtype"] = dtype
    path = folder / "model.safetensors"
    path.write_bytes(ckpt.safetensors_file(header, body))
    with pytest.raises(CheckpointError) as err:
        lm_from_package(load_package(path), str(path), CPU, torch.float32)
    check_one_line(err.value, str(path))


def test_a_valid_safetensors_file_still_loads(folder):
    """The baseline of the safetensors fuzzing: the unedited file loads."""
    header, body = ckpt.safetensors_parts()
    path = folder / "model.safetensors"
    path.write_bytes(ckpt.safetensors_file(header, body))
    assert load_file(path, "lm") is None
    assert torch.equal(load_package(path)["best_state"][TEXT_PROJ_KEY],
                       ckpt.package(ckpt.LM)["best_state"][TEXT_PROJ_KEY])


@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_unedited_files_load(kind):
    """The baseline of every fuzz target above: the fixture files themselves load."""
    assert load_file(FILES[kind], kind) is None
    build(copy.copy(ckpt.package(FILES[kind])), "SOURCE", kind)


def test_builders_make_what_torch_makes(folder):
    """The hand-assembled pickles are real pickles: an honest tensor record loads as the tensor it describes."""
    path = folder / "honest.bin"
    path.write_bytes(ckpt.torch_zip(ckpt.tensor_pickle(), {"0": struct.pack("<7f", *range(7))}))
    assert torch.equal(load_package(path)["a"], torch.arange(7.0))
    path.write_bytes(ckpt.torch_zip(ckpt.wrap(ckpt.call("collections", "OrderedDict", (), "reduce"), "dict")))
    assert load_package(path) == {"xp.cfg": {}}
