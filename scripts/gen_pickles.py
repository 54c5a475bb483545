#!/usr/bin/env python3
"""Regenerates tests/data/pickles.json and tests/data/numpy_pickles.json.

Every value below is pickled with protocols 0 to 5 by this Python; the JSON keeps the
pickle (hex) and what the Rust decoder must make of it:

- pickles.json: built-in types; "repr" is Python's repr() of the value, which
  serpy::pickle::Value's Display reproduces for these values.
- numpy_pickles.json: numpy arrays and scalars; for arrays "dtype" (dtype.str), "shape",
  "fortran" and "data" (hex of the item bytes in memory order) and "list" (repr of
  tolist()); for scalars "repr" (repr of .item()).

Run from the repository root, with numpy installed (any numpy 1.x or 2.x):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install numpy
    /tmp/venv/bin/python scripts/gen_pickles.py
"""

import json
import os
import pickle
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data")
PROTOCOLS = range(0, 6)


def natives():
    shared = [1, "x"]
    return [
        ("none", None),
        ("true", True),
        ("false", False),
        ("int_0", 0),
        ("int_small", [1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -(2**31)]),
        ("int_i64", [2**63 - 1, -(2**63), 2**40, -(2**40)]),
        ("int_u64", [2**63, 2**64 - 1]),
        ("int_big", [2**64, -(2**64) - 1, 2**100, -(2**200), 10**50]),
        ("float", [0.0, -0.0, 1.5, -2.25, 1e100, 1e-300, 5e-324, 0.1, 1e16]),
        ("float_special", [float("inf"), float("-inf"), float("nan")]),
        ("complex", [1 + 2j, -1.5j, complex(2.5, -0.0)]),
        ("str_empty", ""),
        ("str_ascii", "hello"),
        ("str_unicode", "µé€😀 ünïcødé"),
        ("str_escapes", "it's \"quoted\"\nline\ttab\\back"),
        ("bytes_empty", b""),
        ("bytes_short", b"abc"),
        ("bytes_all", bytes(range(256))),
        ("bytes_long", b"\x00\x01" * 300),
        ("bytearray_empty", bytearray()),
        ("bytearray", bytearray(b"abc\x00\xff\x1f")),
        ("list_empty", []),
        ("list_mixed", [1, "a", None, 2.5, b"b", True]),
        ("list_nested", [[1, [2, [3, [4, []]]]]]),
        ("list_long", list(range(1100))),
        ("tuple_0", ()),
        ("tuple_1", (1,)),
        ("tuple_2", (1, "two")),
        ("tuple_3", (1, 2, 3)),
        ("tuple_5", (1, 2, 3, 4, (5,))),
        ("dict_empty", {}),
        ("dict_settings", {"exposure": 10, "gain": 2.5}),
        ("dict_keys", {1: "a", (1, 2): [3], "s": {"nested": None}, 2.5: b"x", None: True}),
        ("dict_long", {f"k{i}": i for i in range(1100)}),
        ("set_empty", set()),
        ("set_ints", {1, 2, 3}),
        ("set_mixed", {"a", 1, (2, 3)}),
        ("frozenset_empty", frozenset()),
        ("frozenset", frozenset({1, 2})),
        ("set_of_frozensets", {frozenset({1}), frozenset()}),
        ("shared_refs", [shared, shared, {"again": shared}]),
        ("everything", {"none": None, "list": [1, 2], "tuple": (3,), "set": {4},
                        "bytes": b"5", "bytearray": bytearray(b"6"), "big": 2**70,
                        "float": 7.5, "complex": 8j, "str": "nine"}),
    ]


def arrays():
    out = []
    dtypes = ["u1", "<u2", ">u2", "<i4", ">i4", "<i8", "<u8", "<f2", "<f4", "<f8", ">f8",
              "<c8", "<c16", ">c16", "|b1", "i1"]
    for dt in dtypes:
        d = np.dtype(dt)
        if d.kind == "b":
            base = np.array([True, False, True, True, False, False])
        elif d.kind == "c":
            base = np.array([1 + 2j, -3.5j, 0, 4.25, -1 - 1j, 2j])
        elif d.kind == "u":
            base = np.array([0, 1, 2, 200, 255, 7])
            if d.itemsize >= 2:
                base = np.array([0, 1, 2, 0xFFFF, 300, 7], dtype=np.uint64)
            if d.itemsize == 8:
                base = np.array([0, 1, 2**64 - 1, 2**63, 300, 7], dtype=np.uint64)
        elif d.kind == "i":
            base = np.array([0, -1, 2, -128, 127, 7])
            if d.itemsize >= 4:
                base = np.array([0, -1, 2**31 - 1, -(2**31), 300, 7])
        else:
            base = np.array([0.0, -1.5, 0.1, 1e10 if d.itemsize > 2 else 1e4, -0.0, 3.25])
        a = base.astype(d)
        out.append((f"{dt}_1d", a))
        out.append((f"{dt}_2d_C", a.reshape(2, 3)))
        out.append((f"{dt}_2d_F", np.asfortranarray(a.reshape(2, 3))))
    f = np.arange(24, dtype="<f8")
    out += [
        ("f8_0d", np.array(1.5)),
        ("u2_0d_big", np.array(513, dtype=">u2")),
        ("f8_empty", np.zeros(0)),
        ("f8_empty_2d", np.zeros((3, 0))),
        ("u1_empty_2d", np.zeros((0, 4), dtype=np.uint8)),
        ("f8_3d_C", f.reshape(2, 3, 4)),
        ("f8_3d_F", np.asfortranarray(f.reshape(2, 3, 4))),
        ("i4_4d", np.arange(16, dtype="<i4").reshape(2, 2, 2, 2)),
        ("u2_noncontiguous", np.arange(12, dtype="<u2").reshape(3, 4)[:, ::2]),
        ("u1_readonly", np.frombuffer(b"\x01\x02\x03\x04", dtype=np.uint8)),
        ("u2_image", (np.arange(24 * 16, dtype=np.uint32) * 171 % 65536).astype("<u2").reshape(16, 24)),
    ]
    return out


def scalars():
    return [
        ("np_float64", np.float64(2.5)),
        ("np_float32", np.float32(0.1)),
        ("np_int32", np.int32(-3)),
        ("np_uint64", np.uint64(2**64 - 1)),
        ("np_int8", np.int8(-128)),
        ("np_bool", np.bool_(True)),
        ("np_complex128", np.complex128(1 + 2j)),
    ]


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for name, v in natives():
        for p in PROTOCOLS:
            cases.append({"name": name, "protocol": p, "pickle": pickle.dumps(v, protocol=p).hex(),
                          "repr": repr(v)})
    with open(os.path.join(OUT, "pickles.json"), "w") as fh:
        json.dump({"python": sys.version.split()[0], "cases": cases}, fh, indent=0)
        fh.write("\n")

    cases = []
    for name, a in arrays():
        for p in PROTOCOLS:
            data = pickle.dumps(a, protocol=p)
            case = {"name": name, "protocol": p, "pickle": data.hex(), "dtype": a.dtype.str,
                    "shape": list(a.shape),
                    "fortran": bool(a.flags.f_contiguous and not a.flags.c_contiguous),
                    "data": a.tobytes(order="A").hex(), "list": repr(a.tolist())}
            cases.append(case)
            # The same pickle as numpy 1.x writes it (module numpy.core instead of numpy._core),
            # for the protocols whose GLOBAL opcode holds the name as text.
            if p <= 3 and b"numpy._core." in data:
                old = dict(case, name=name + "_numpy1",
                           pickle=data.replace(b"numpy._core.", b"numpy.core.").hex())
                cases.append(old)
    for name, s in scalars():
        for p in PROTOCOLS:
            cases.append({"name": name, "protocol": p, "pickle": pickle.dumps(s, protocol=p).hex(),
                          "repr": repr(s.item())})
    with open(os.path.join(OUT, "numpy_pickles.json"), "w") as fh:
        json.dump({"python": sys.version.split()[0], "numpy": np.__version__, "cases": cases}, fh,
                  indent=0)
        fh.write("\n")
    print("wrote tests/data/pickles.json and tests/data/numpy_pickles.json")


if __name__ == "__main__":
    main()
