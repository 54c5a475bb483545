"""The instrument examples' test image, in plain Python (numpy is optional for serpy_rs).

pixel (row i, column j) = float32(cos(x[j]) * sin(y[i])), x = y = linspace(0, p*pi, side),
row after row, little endian: what test_serpy2_2_utils.float32_numpy_image(p).tobytes()
gives, and what the Rust instrument examples send and check.
"""

import math
import struct


def linspace(stop, n):
    if n == 1:
        return [0.0]
    step = stop / (n - 1)
    v = [k * step + 0.0 for k in range(n)]
    v[-1] = stop
    return v


def image(p, side):
    axis = linspace(p * math.pi, side)
    cos = [math.cos(x) for x in axis]
    sin = [math.sin(y) for y in axis]
    row = struct.Struct("<{}f".format(side))
    return b"".join(row.pack(*[c * s for c in cos]) for s in sin)
