"""The numba loops behind `cpu_kernels` (imported only where numba is installed).

Every value is typed explicitly as uint32, int64 or float32: numba's default promotion of integers
to 64 bits would neither wrap like the torch code nor vectorise.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

u32, f32 = np.uint32, np.float32


# ---------------------------------------------------------------- random streams and noises


@njit(inline="always")
def mix(x):  # lowbias32 (random_streams.mix)
    x = u32(x ^ (x >> u32(16)))
    x = u32(x * u32(0x7FEB352D))
    x = u32(x ^ (x >> u32(15)))
    x = u32(x * u32(0x846CA68B))
    return u32(x ^ (x >> u32(16)))


@njit(inline="always")
def image_key(low, high, stream_key):  # random_streams.Streams.bits' per-image key
    return mix(u32(mix(u32(low ^ stream_key)) ^ high))


@njit(inline="always")
def hash_at(k, key):  # the k-th hash of an image's stream
    return mix(u32(u32(k) * u32(0x9E3779B9) + key))


@njit(inline="always")
def box_muller(key, radius, cosine, sine, z):
    """Fill (2 * pairs,) `z` with `Streams.normal`'s values: cosine terms, then sine terms."""
    pairs = z.shape[0] // 2
    for k in range(pairs):
        bits = hash_at(k, key)
        r = radius[bits >> u32(16)]
        angle = bits & u32(0xFFFF)
        z[k] = r * cosine[angle]
        z[pairs + k] = r * sine[angle]


@njit(parallel=True, cache=True)
def hash_bits(low, high, stream_key, out):
    for i in prange(out.shape[0]):
        key, row = image_key(low[i], high[i], stream_key), out[i]
        for k in range(row.shape[0]):
            row[k] = hash_at(k, key)


@njit(parallel=True, cache=True)
def uniforms(low, high, stream_key, scale, offset, out):
    for i in prange(out.shape[0]):
        key, row = image_key(low[i], high[i], stream_key), out[i]
        for k in range(row.shape[0]):
            row[k] = f32(f32(hash_at(k, key) >> u32(8)) * scale) + offset


@njit(parallel=True, cache=True)
def normals(low, high, stream_key, radius, cosine, sine, out):
    for i in prange(out.shape[0]):
        box_muller(image_key(low[i], high[i], stream_key), radius, cosine, sine, out[i])


@njit(parallel=True, cache=True)
def normal_noise(images, low, high, stream_key, radius, cosine, sine, gain, multiply, out):
    count = images.shape[1]
    for i in prange(images.shape[0]):
        x, row = images[i], out[i]
        z = np.empty(2 * ((count + 1) // 2), np.float32)  # normals' values of the image
        box_muller(image_key(low[i], high[i], stream_key), radius, cosine, sine, z)
        if multiply:  # engine.speckle_noise
            for k in range(count):
                v = f32(f32(z[k] * gain) + f32(1)) * f32(x[k])
                row[k] = np.uint8(min(max(v, f32(0)), f32(255)))
        else:  # engine.gaussian_noise
            for k in range(count):
                v = f32(z[k] * gain) + f32(x[k])
                row[k] = np.uint8(min(max(v, f32(0)), f32(255)))


@njit(parallel=True, cache=True)
def shot_noise(images, low, high, stream_key, levels, out):
    count = images.shape[1]
    half = (count + 1) // 2
    for i in prange(images.shape[0]):
        key, x, row = image_key(low[i], high[i], stream_key), images[i], out[i]
        for k in range(half):
            bits = hash_at(k, key)
            row[k] = levels[np.intp(x[k]) * 4096 + np.intp(bits >> u32(20))]
            if half + k < count:
                field = np.intp((bits >> u32(4)) & u32(0xFFF))
                row[half + k] = levels[np.intp(x[half + k]) * 4096 + field]


@njit(parallel=True, cache=True)
def impulse_noise(images, low, high, stream_key, bound, out):
    for i in prange(images.shape[0]):
        key, x, row = image_key(low[i], high[i], stream_key), images[i], out[i]
        for k in range(row.shape[0]):
            bits = hash_at(k, key)
            salt = np.uint8((bits & u32(1)) * u32(255))
            row[k] = salt if bits < bound else x[k]


@njit(inline="always")
def box_rows(x, first, count, weight, out, total):
    """Pillow's BOX pass along the first axis of (L, K) uint8 `x` into (L', K) `out`: output o is
    the sum of rows first[o] to first[o] + count[o], times the 22-bit `weight[o]`, rounded half up
    (engine._box_pass); `total` is (>= K,) int32 scratch."""
    for o in range(out.shape[0]):
        for k in range(x.shape[1]):
            total[k] = 0
        for j in range(first[o], first[o] + count[o]):
            for k in range(x.shape[1]):
                total[k] += np.int32(x[j, k])
        for k in range(x.shape[1]):
            out[o, k] = np.uint8(min((total[k] * weight[o] + np.int32(1 << 21)) >> 22, 255))


@njit(parallel=True, cache=True)
def box_resize(planes, row_taps, col_taps, out):
    """(M, H, W) uint8 planes resized into (M, H', W') `out`: Pillow's pass along the rows, then
    along the columns, each as sums of whole (transposed) rows."""
    rows_first, rows_count, rows_weight = row_taps
    cols_first, cols_count, cols_weight = col_taps
    h, w_out = planes.shape[1], out.shape[2]
    for p in prange(planes.shape[0]):
        total = np.empty(max(h, w_out), np.int32)
        across = np.empty((w_out, h), np.uint8)
        rows = np.ascontiguousarray(planes[p].T)
        box_rows(rows, cols_first, cols_count, cols_weight, across, total)
        box_rows(np.ascontiguousarray(across.T), rows_first, rows_count, rows_weight, out[p], total)


@njit(inline="always")
def reflect(i, n):  # OpenCV's BORDER_REFLECT_101 for one step outside [0, n)
    return 1 if i < 0 else (n - 2 if i >= n else i)


@njit(inline="always")
def pad101(x, dtype):  # x with one more pixel on every side, reflect-101
    h, w = x.shape
    out = np.empty((h + 2, w + 2), dtype)
    for r in range(-1, h + 1):
        for c in range(-1, w + 1):
            out[r + 1, c + 1] = x[reflect(r, h), reflect(c, w)]
    return out


@njit(cache=True)
def canny(x, low, high, edges):
    """cv2.Canny(x, low, high), 3x3 Sobel (replicated border), L1 magnitude (engine._canny):
    `edges` gets 2 on edges, 1 on candidates left unconnected, 0 elsewhere."""
    h, w = x.shape
    p = np.empty((h + 2, w + 2), np.int32)  # replicated border
    for r in range(h + 2):
        for c in range(w + 2):
            p[r, c] = x[min(max(r - 1, 0), h - 1), min(max(c - 1, 0), w - 1)]
    gx, gy = np.empty((h, w), np.int32), np.empty((h, w), np.int32)
    mag = np.zeros((h + 2, w + 2), np.int32)
    for r in range(h):
        for c in range(w):
            gx[r, c] = (p[r, c + 2] - p[r, c] + 2 * (p[r + 1, c + 2] - p[r + 1, c])
                        + p[r + 2, c + 2] - p[r + 2, c])
            gy[r, c] = (p[r + 2, c] - p[r, c] + 2 * (p[r + 2, c + 1] - p[r, c + 1])
                        + p[r + 2, c + 2] - p[r, c + 2])
            mag[r + 1, c + 1] = abs(gx[r, c]) + abs(gy[r, c])
    state = np.zeros((h + 2, w + 2), np.uint8)  # a border that is never a candidate
    rows, cols = np.empty(h * w, np.int32), np.empty(h * w, np.int32)
    top = 0
    for r in range(1, h + 1):
        for c in range(1, w + 1):
            m = mag[r, c]
            if m <= low:
                continue
            gxv, gyv = gx[r - 1, c - 1], gy[r - 1, c - 1]
            ax, ay = abs(gxv), abs(gyv) << 15
            tg22x = ax * 13573
            strict = False
            if ay < tg22x:
                n1, n2 = mag[r, c - 1], mag[r, c + 1]
            elif ay > tg22x + (ax << 16):
                n1, n2 = mag[r - 1, c], mag[r + 1, c]
            elif (gxv ^ gyv) >= 0:
                n1, n2, strict = mag[r - 1, c - 1], mag[r + 1, c + 1], True
            else:
                n1, n2, strict = mag[r - 1, c + 1], mag[r + 1, c - 1], True
            if m > n1 and (m > n2 or (m == n2 and not strict)):
                if m > high:
                    state[r, c] = 2
                    rows[top] = r
                    cols[top] = c
                    top += 1
                else:
                    state[r, c] = 1
    while top:  # hysteresis: candidates 8-connected to an edge become edges
        top -= 1
        r, c = rows[top], cols[top]
        for rr in range(r - 1, r + 2):
            for cc in range(c - 1, c + 2):
                if state[rr, cc] == 1:
                    state[rr, cc] = 2
                    rows[top], cols[top] = rr, cc
                    top += 1
    for r in range(h):  # (a slice assignment across dtypes takes numba seconds to compile)
        for c in range(w):
            edges[r, c] = state[r + 1, c + 1]


@njit(cache=True)
def edge_distance(edges, dist):
    """cv2.distanceTransform(255 - edges, DIST_L2, 5) of the edges marked 2, truncated at 20:
    OpenCV's forward and backward passes over the 5x5 chamfer mask (1, 1.4, 2.1969), float32
    sums (engine._chamfer_distance)."""
    h, w = edges.shape
    step, diagonal, knight = f32(1), f32(1.4), f32(2.1969)
    t = np.full((h + 4, w + 4), f32(1e6), np.float32)
    reach = np.empty(w + 4, np.float32)  # a row's best through the rows already swept
    for r in range(2, h + 2):  # forward: the moves from above (vectorised), then along the row
        for c in range(2, w + 2):
            best = min(t[r - 2, c - 1], t[r - 2, c + 1], t[r - 1, c - 2], t[r - 1, c + 2]) + knight
            best = min(best, min(t[r - 1, c - 1], t[r - 1, c + 1]) + diagonal, t[r - 1, c] + step)
            reach[c] = f32(0) if edges[r - 2, c - 2] == 2 else best
        running = t[r, 1]
        for c in range(2, w + 2):
            running = min(reach[c], running + step)
            t[r, c] = running
    for r in range(h + 1, 1, -1):  # backward: from below, then along the row from the right
        for c in range(2, w + 2):
            best = min(t[r + 2, c + 1], t[r + 2, c - 1], t[r + 1, c + 2], t[r + 1, c - 2]) + knight
            best = min(best, min(t[r + 1, c + 1], t[r + 1, c - 1]) + diagonal)
            reach[c] = min(best, t[r + 1, c] + step)
        running = t[r, w + 2]
        for c in range(w + 1, 1, -1):
            best = t[r, c]
            if best > step:
                best = min(best, reach[c], running + step)
                t[r, c] = best
            running = best
            dist[r - 2, c - 2] = min(best, f32(20))


@njit(cache=True)
def water_mask_of(layer, out):
    """The water mask's OpenCV chain of one layer (engine._water_mask), as uint8."""
    h, w = layer.shape
    edges = np.empty((h, w), np.uint8)
    canny(layer, 50, 150, edges)
    dist = np.empty((h, w), np.float32)
    edge_distance(edges, dist)
    padded = pad101(dist, np.float64)  # cv2.blur (float64 sums), then astype(uint8)
    blurred = np.empty((h, w), np.uint8)
    hist = np.zeros(256, np.int32)
    for r in range(h):
        for c in range(w):
            total = (padded[r, c] + padded[r, c + 1] + padded[r, c + 2]
                     + padded[r + 1, c] + padded[r + 1, c + 1] + padded[r + 1, c + 2]
                     + padded[r + 2, c] + padded[r + 2, c + 1] + padded[r + 2, c + 2])
            blurred[r, c] = np.uint8(f32(total * (1 / 9)))
            hist[blurred[r, c]] += 1
    first = 0  # cv2.equalizeHist
    while hist[first] == 0:
        first += 1
    lut = np.empty(256, np.int32)
    if hist[first] == h * w:
        lut.fill(first)
    else:
        scale, running = f32(255) / f32(h * w - hist[first]), 0
        lut[first] = 0
        for v in range(first + 1, 256):
            running += hist[v]
            lut[v] = min(np.rint(f32(running) * scale), 255)
    for r in range(h):
        for c in range(w):
            blurred[r, c] = lut[blurred[r, c]]
    q = pad101(blurred, np.int32)  # cv2.filter2D(CV_8U) with engine._EMBOSS
    embossed = np.empty((h, w), np.int32)
    for r in range(h):
        for c in range(w):
            total = (-2 * q[r, c] - q[r, c + 1] - q[r + 1, c] + q[r + 1, c + 1]
                     + q[r + 1, c + 2] + q[r + 2, c + 1] + 2 * q[r + 2, c + 2])
            embossed[r, c] = min(max(total, 0), 255)
    q = pad101(embossed, np.int32)  # cv2.blur of 8-bit pixels: round(sum / 9), never halfway
    for r in range(h):
        for c in range(w):
            total = (q[r, c] + q[r, c + 1] + q[r, c + 2] + q[r + 1, c] + q[r + 1, c + 1]
                     + q[r + 1, c + 2] + q[r + 2, c] + q[r + 2, c + 1] + q[r + 2, c + 2])
            out[r, c] = np.uint8((2 * total + 9) // 18)


@njit(parallel=True, cache=True)
def water_mask(layers, out):
    for i in prange(layers.shape[0]):
        water_mask_of(layers[i], out[i])


# ---------------------------------------------------------------- JPEG (jpeg_codec.round_trip)


def _c(x: float) -> int:  # jpeg_codec._c: a constant in 13-bit fixed point
    return int(x * 8192 + 0.5)


def _fix(x: float) -> int:  # jpeg_codec._fix: a coefficient in 16-bit fixed point
    return int(x * 65536 + 0.5)


c0298, c0390, c0541, c0765 = _c(0.298631336), _c(0.390180644), _c(0.541196100), _c(0.765366865)
c0899, c1175, c1501, c1847 = _c(0.899976223), _c(1.175875602), _c(1.501321110), _c(1.847759065)
c1961, c2053, c2562, c3072 = _c(1.961570560), _c(2.053119869), _c(2.562915447), _c(3.072711026)
to_ycc = ((_fix(0.299), _fix(0.587), _fix(0.114)), (-_fix(0.16874), -_fix(0.33126), _fix(0.5)),
          (_fix(0.5), -_fix(0.41869), -_fix(0.08131)))
(y_r, y_g, y_b), (cb_r, cb_g, cb_b), (cr_r, cr_g, cr_b) = to_ycc
chroma_offset = (128 << 16) + (1 << 15) - 1
r_cr, g_cb, g_cr, b_cb = _fix(1.402), -_fix(0.34414), -_fix(0.71414), _fix(1.772)
r_off, g_off, b_off = ((1 << 15) - 128 * r_cr, (1 << 15) - 128 * (g_cb + g_cr),
                       (1 << 15) - 128 * b_cb)


@njit(cache=True)
def odd_part(t4, t5, t6, t7):
    z5 = (t4 + t5 + t6 + t7) * c1175
    z1, z2 = (t4 + t7) * -c0899, (t5 + t6) * -c2562
    z3, z4 = (t4 + t6) * -c1961 + z5, (t5 + t7) * -c0390 + z5
    return (t4 * c0298 + z1 + z3, t5 * c2053 + z2 + z4, t6 * c3072 + z2 + z3,
            t7 * c1501 + z1 + z4)


@njit(cache=True)
def forward(v, bits):  # jfdctint.c on v[0:8] in place, descaled by `bits`
    t0, t7, t1, t6 = v[0] + v[7], v[0] - v[7], v[1] + v[6], v[1] - v[6]
    t2, t5, t3, t4 = v[2] + v[5], v[2] - v[5], v[3] + v[4], v[3] - v[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * c0541
    o7, o5, o3, o1 = odd_part(t4, t5, t6, t7)
    half = 1 << (bits - 1)
    v[0] = (((t10 + t11) << 13) + half) >> bits
    v[1] = (o1 + half) >> bits
    v[2] = (z1 + t13 * c0765 + half) >> bits
    v[3] = (o3 + half) >> bits
    v[4] = (((t10 - t11) << 13) + half) >> bits
    v[5] = (o5 + half) >> bits
    v[6] = (z1 - t12 * c1847 + half) >> bits
    v[7] = (o7 + half) >> bits


@njit(cache=True)
def inverse(v, bits):  # jidctint.c on v[0:8] in place, descaled by `bits`
    z1 = (v[2] + v[6]) * c0541
    t2, t3 = z1 - v[6] * c1847, z1 + v[2] * c0765
    t0, t1 = (v[0] + v[4]) << 13, (v[0] - v[4]) << 13
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = odd_part(v[7], v[5], v[3], v[1])
    half = 1 << (bits - 1)
    v[0], v[7] = (t10 + o3 + half) >> bits, (t10 - o3 + half) >> bits
    v[1], v[6] = (t11 + o2 + half) >> bits, (t11 - o2 + half) >> bits
    v[2], v[5] = (t12 + o1 + half) >> bits, (t12 - o1 + half) >> bits
    v[3], v[4] = (t13 + o0 + half) >> bits, (t13 - o0 + half) >> bits


@njit(cache=True)
def lossy(plane, table, block, line):  # jpeg_codec._lossy on every 8x8 block of `plane`
    for top in range(0, plane.shape[0], 8):
        for left in range(0, plane.shape[1], 8):
            for r in range(8):
                for c in range(8):
                    block[r, c] = plane[top + r, left + c] - 128
                forward(block[r], 11)
            for c in range(8):
                for r in range(8):
                    line[r] = block[r, c]
                forward(line, 15)
                for r in range(8):
                    q = table[r * 8 + c]
                    level = (abs(line[r]) + 4 * q) // (8 * q)
                    line[r] = (level if line[r] >= 0 else -level) * q
                inverse(line, 11)
                for r in range(8):
                    block[r, c] = line[r]
            for r in range(8):
                inverse(block[r], 18)
                for c in range(8):
                    plane[top + r, left + c] = min(max(block[r, c] + 128, 0), 255)


@njit(cache=True)
def jpeg_round_trip_of(x, luma, chroma, out):
    """`jpeg_codec.round_trip` of one (3, H, W) uint8 image into `out`."""
    _, h, w = x.shape
    ch, cw = (h + 1) // 2, (w + 1) // 2
    bh, bw, bch, bcw = -(-h // 8) * 8, -(-w // 8) * 8, -(-ch // 8) * 8, -(-cw // 8) * 8
    rows, cols = max(bh, 2 * ch), max(bw, 2 * bcw)
    y = np.empty((bh, bw), np.int64)
    cb, cr = np.empty((bch, bcw), np.int64), np.empty((bch, bcw), np.int64)
    full_cb, full_cr = np.empty((rows, cols), np.int64), np.empty((rows, cols), np.int64)
    for r in range(rows):  # extended by repeating the last row and column; jccolor.c
        for c in range(cols):
            rr, cc = min(r, h - 1), min(c, w - 1)
            red, green = np.int64(x[0, rr, cc]), np.int64(x[1, rr, cc])
            blue = np.int64(x[2, rr, cc])
            if r < bh and c < bw:
                y[r, c] = (y_r * red + y_g * green + y_b * blue + 32768) >> 16
            full_cb[r, c] = (cb_r * red + cb_g * green + cb_b * blue + chroma_offset) >> 16
            full_cr[r, c] = (cr_r * red + cr_g * green + cr_b * blue + chroma_offset) >> 16
    for r in range(bch):  # jcsample.c h2v2, rows below the image repeat the last one
        src = 2 * min(r, ch - 1)
        for c in range(bcw):
            bias = 1 + c % 2
            cb[r, c] = (full_cb[src, 2 * c] + full_cb[src, 2 * c + 1] + full_cb[src + 1, 2 * c]
                        + full_cb[src + 1, 2 * c + 1] + bias) >> 2
            cr[r, c] = (full_cr[src, 2 * c] + full_cr[src, 2 * c + 1] + full_cr[src + 1, 2 * c]
                        + full_cr[src + 1, 2 * c + 1] + bias) >> 2
    block, line = np.empty((8, 8), np.int64), np.empty(8, np.int64)
    lossy(y, luma, block, line)
    lossy(cb, chroma, block, line)
    lossy(cr, chroma, block, line)
    for r in range(h):  # jdsample.c h2v2 fancy upsampling (plain repetition if narrow)
        near, far = r // 2, min(max(r // 2 + (1 if r % 2 else -1), 0), ch - 1)
        for c in range(w):
            if cw > 2:
                cnear = c // 2
                cfar = min(max(cnear + (1 if c % 2 else -1), 0), cw - 1)
                bias = 7 if c % 2 else 8
                u = (9 * cb[near, cnear] + 3 * (cb[far, cnear] + cb[near, cfar])
                     + cb[far, cfar] + bias) >> 4
                v = (9 * cr[near, cnear] + 3 * (cr[far, cnear] + cr[near, cfar])
                     + cr[far, cfar] + bias) >> 4
            else:
                u, v = cb[near, c // 2], cr[near, c // 2]
            luma_value = y[r, c]  # jdcolor.c
            out[0, r, c] = min(max(luma_value + ((r_cr * v + r_off) >> 16), 0), 255)
            out[1, r, c] = min(max(luma_value + ((g_cb * u + g_cr * v + g_off) >> 16), 0), 255)
            out[2, r, c] = min(max(luma_value + ((b_cb * u + b_off) >> 16), 0), 255)


@njit(parallel=True, cache=True)
def jpeg_round_trip(images, luma, chroma, out):
    for i in prange(images.shape[0]):
        jpeg_round_trip_of(images[i], luma, chroma, out[i])
