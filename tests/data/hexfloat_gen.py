#!/usr/bin/env python3
"""Regenerates hexfloat.json: what Python's float.hex() and float.fromhex() give.

The Rust tests read the JSON; Python is needed only to regenerate it:
    python3 tests/data/hexfloat_gen.py > tests/data/hexfloat.json
"""
import json
import random
import struct

rng = random.Random(20260601)


def bits(x):
    return "%016x" % struct.unpack("<Q", struct.pack("<d", x))[0]


def from_bits(b):
    return struct.unpack("<d", struct.pack("<Q", b))[0]


def hexdigits(n):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


# 1. float.hex() of random bit patterns and of special values.
fmt = []
specials = [0, 1 << 63, 1, 2, (1 << 52) - 1, 1 << 52, (1 << 52) + 1, 0x7FEFFFFFFFFFFFFF,
            0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000001,
            0x7FF0000000000001, 0x3FF0000000000000, 0xBFF0000000000000, 0x8000000000000001]
patterns = specials + [rng.getrandbits(64) for _ in range(250)]
# Random exponents are mostly huge or tiny: add numbers of ordinary size too.
patterns += [rng.getrandbits(52) | (rng.randrange(1000, 1080) << 52) | (rng.getrandbits(1) << 63)
             for _ in range(50)]
patterns += [rng.getrandbits(52) for _ in range(30)]  # subnormals
for b in patterns:
    fmt.append({"bits": "%016x" % b, "hex": from_bits(b).hex()})

# 2. float.fromhex() of many spellings.
inputs = []
for e in fmt:
    s = e["hex"]
    inputs.append(s)
    if rng.random() < 0.3:
        inputs.append(s.upper())
    if rng.random() < 0.3:
        inputs.append(s.replace("0x", "", 1))
    if rng.random() < 0.2:
        inputs.append(rng.choice([" ", "\t", "\n", "\x0b", "\x0c", "\r", "  "]) + s
                      + rng.choice(["", " ", "\n", "\t\r "]))
# No exponent, no 0x, odd point positions.
for _ in range(80):
    n = rng.randrange(1, 20)
    d = hexdigits(n)
    p = rng.randrange(0, n + 1)
    s = d[:p] + "." + d[p:] if rng.random() < 0.7 else d
    if rng.random() < 0.5:
        s = rng.choice(["0x", "0X"]) + s
    if rng.random() < 0.3:
        s = rng.choice(["-", "+"]) + s
    if rng.random() < 0.5:
        s += rng.choice(["p", "P"]) + rng.choice(["", "+", "-"]) + str(rng.randrange(0, 1100))
    if rng.random() < 0.3:
        s = "".join(c.upper() if rng.random() < 0.5 else c for c in s)
    inputs.append(s)
# Long mantissas that need rounding: exact ties, just below, just above, in normal and
# subnormal ranges and at the edges.
for _ in range(80):
    m = rng.getrandbits(52) | (1 << 52)
    exp = rng.choice([rng.randrange(-1000, 1000), rng.randrange(-1100, -1020),
                      rng.randrange(1000, 1024)])
    kind = rng.choice(["tie", "below", "above", "random"])
    extra = rng.randrange(1, 40)  # extra bits beyond the 53
    v = m << extra
    if kind == "tie":
        v += 1 << (extra - 1)
    elif kind == "below":
        v += (1 << (extra - 1)) - 1
    elif kind == "above":
        v += (1 << (extra - 1)) + 1
    else:
        v += rng.getrandbits(extra)
    h = "%x" % v
    point = rng.randrange(0, len(h) + 1)
    # value = v * 2^(exp - 52 - extra); digits after the point shift by 4 each.
    e = exp - 52 - extra + 4 * (len(h) - point)
    inputs.append("0x%s.%sp%d" % (h[:point], h[point:], e))
for k in range(0, 60):
    # Subnormal ties and near-ties at every position: (2k+1) * 2^-1075 and neighbours.
    for delta in (0, 1, -1):
        v = ((2 * k + 1) << 20) + delta
        inputs.append("0x%xp-%d" % (v, 1075 + 20))
# Boundaries.
inputs += [
    "0x1.fffffffffffffp+1023", "0x1.fffffffffffff7ffffffp+1023", "0x1.fffffffffffff8p+1023",
    "0x1.fffffffffffff80000000001p+1023", "0x1p+1024", "0x1p+1023", "0x2p+1023", "-0x1p+1024",
    "0x0.fffffffffffff8p+1024", "0x0.fffffffffffff7p+1024", "0x1fffffffffffffp+971",
    "0x1fffffffffffff8p+967", "0x1p-1022", "0x1.fffffffffffff8p-1023", "0x1.fffffffffffff7p-1023",
    "0x0.fffffffffffff8p-1022", "0x1p-1074", "0x1p-1075", "0x1.0000000000001p-1075",
    "0x0.ffffffffffffffffp-1075", "0x1p-1076", "0x3p-1076", "0x1.8p-1075", "0x1p-1080",
    "0x0.0000000000001p-1022", "0x0.00000000000008p-1022", "0x0.00000000000008000001p-1022",
    "0x0.00000000000018p-1022", "-0x1p-1075", "-0x1.0000000000001p-1075",
    "0x1p+4611686018427387903", "0x1p+4611686018427387904", "0x1p-4611686018427387904",
    "0x1p-4611686018427387905", "0x0p+99999999999999999999999", "0x1p+99999999999999999999999",
    "0x1p-99999999999999999999999", "-0x0.0p-99999999999999999999999", "0x1p+9223372036854775807",
    "0x1p+9223372036854775808", "0x1p-9223372036854775808", "0x1p-9223372036854775809",
    "0x0.0000000000000000000000000000000000000001p+160", "0x100000000000000000000p-80",
    "0x.00000000000000000000000000000000000000000000000001p+200",
    "0" * 300 + "1p-4", "1" + "0" * 300 + "p-1200", "1" + "0" * 300 + "p-1000",
    "0x1." + "0" * 200 + "1p0", "0x1.00000000000008" + "0" * 200 + "p0",
    "0x1.00000000000008" + "0" * 200 + "1p0", "0x1.00000000000018" + "0" * 200 + "p0",
    "inf", "-inf", "+inf", "INF", "Infinity", "-iNfInItY", "nan", "-nan", "+NaN", "NAN",
    " inf ", "\tnan\n", "0", "-0", "+0", "0.", ".0", "0x0", "-0x0.0p+0", "0x0p-99999",
    "1", "1.", ".8", "-.8", "0X.8P+1", "ff", "FF", "1e3", "1E3", "0x1P-3", "0x1p03", "0x1p+0",
    "0x1p-0", "0x1p000000000000000000000000000000001", "0x1.8p1 ", " \t\n\x0b\x0c\r0x1.8p1",
]
# Strings Python rejects.
inputs += [
    "", " ", "\t", "0x", "0X", "0x.", ".", "p1", "0xp1", "1p", "1P", "1p+", "1p-", "1p+-1",
    "- 1", "--1", "+-1", "-+1", "0x1_0", "1_0", "1e3 x", "infinit", "infinityy", "in",
    "nan(1)", "nanx", "-nan-", "0xx1", "0x0x1", "1.2.3", "1p1.5", "1p1e", "\u20031",
    "1\u00a0", "\x1c1", "1\x1f", "1\x00", "0x1p 1", "1 p1", "x1", "0x-1", "1pp1", "1.p",
    "g", "0xg", "1g", "0x1.g", "++1", "1+", "0x1p1p1", "0x 1", "0 x1", ". 8", "1 .8",
    "\u0661", "１", "0x1\u0300", "inf inf", "i nf", "0b1", "0o1", "#1", "$1", "1,5",
    # Python reports an overflow before it looks at what follows the number.
    "0x1p9999 x", "0x1p9999x", "1p99999999999999999999999z", "0x1.fffffffffffff8p1023junk",
    "0x1p2000p", "0x1p2000.", "0x1p1 x", "0x0p9999 x", "0x1p-9999 x", "inf x", "0x1p1025-",
]
seen = set()
parse = []
for s in inputs:
    if s in seen:
        continue
    seen.add(s)
    try:
        x = float.fromhex(s)
        parse.append({"in": s, "bits": "nan" if x != x else bits(x)})
    except OverflowError:
        parse.append({"in": s, "err": "overflow"})
    except ValueError:
        parse.append({"in": s, "err": "invalid"})

json.dump({"about": "float.hex() and float.fromhex() of Python %s; regenerate with "
           "tests/data/hexfloat_gen.py" % ".".join(map(str, __import__("sys").version_info[:2])),
           "hex": fmt, "fromhex": parse}, __import__("sys").stdout, indent=0, ensure_ascii=True)
print()
