#!/usr/bin/env python3
"""Dirty image of the same Stokes I samples with ducc0.wgridder, for `horizons bench pipeline`.

    python ducc0-grid.py DIR

DIR holds what the bench wrote: u.f64, v.f64 (wavelengths), vis.c64 (complex64), w.f32
(imaging weights) and params.json {"npix", "cell_rad", "epsilon", "threads": [..], "repeats"}.
For every thread count it times `ducc0.wgridder.vis2dirty` (best of `repeats` calls), writes
the image to dirty-<threads>.f64 (float64, row-major in the bench's orientation: row = m,
column = -l, i.e. east on the left) and prints one JSON line with the timings.

The mapping to ducc0's conventions: uv are already in wavelengths, so freq = [c] and
uvw = (u, v, 0) in "metres" give the same coordinates; w is zero and do_wgridding is off,
because horizons' gridder ignores the w term (a 2-D gridder); the image is not divided by n.
ducc0 images are indexed [x(l), y(m)]; `flip_u` turns l into -l, and the transpose gives
horizons' [row(m), column] layout. The visibilities are passed as complex128 so ducc0
computes in double precision, like horizons' f64 grid.
"""
import json
import os
import sys
import time

import numpy as np

C_M_PER_S = 299_792_458.0


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: ducc0-grid.py DIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    try:
        import ducc0
        from ducc0.wgridder import vis2dirty
    except ImportError as e:
        print(f"cannot import ducc0: {e}", file=sys.stderr)
        return 3
    with open(os.path.join(d, "params.json")) as f:
        p = json.load(f)
    u = np.fromfile(os.path.join(d, "u.f64"), dtype=np.float64)
    v = np.fromfile(os.path.join(d, "v.f64"), dtype=np.float64)
    vis = np.fromfile(os.path.join(d, "vis.c64"), dtype=np.complex64).astype(np.complex128)
    w = np.fromfile(os.path.join(d, "w.f32"), dtype=np.float32).astype(np.float64)
    if not (len(u) == len(v) == len(vis) == len(w)):
        print(f"inconsistent inputs: {len(u)} u, {len(v)} v, {len(vis)} vis, {len(w)} w", file=sys.stderr)
        return 4
    uvw = np.zeros((len(u), 3), dtype=np.float64)
    uvw[:, 0] = u
    uvw[:, 1] = v
    freq = np.array([C_M_PER_S])
    npix, cell = int(p["npix"]), float(p["cell_rad"])
    runs = []
    for nthreads in p["threads"]:
        times = []
        dirty = None
        for _ in range(max(1, int(p["repeats"]))):
            t = time.perf_counter()
            dirty = vis2dirty(
                uvw=uvw,
                freq=freq,
                vis=vis[:, None],
                wgt=w[:, None],
                npix_x=npix,
                npix_y=npix,
                pixsize_x=cell,
                pixsize_y=cell,
                epsilon=float(p["epsilon"]),
                do_wgridding=False,
                nthreads=int(nthreads),
                flip_u=True,
                divide_by_n=False,
            )
            times.append(time.perf_counter() - t)
        np.ascontiguousarray(dirty.T, dtype=np.float64).tofile(os.path.join(d, f"dirty-{nthreads}.f64"))
        runs.append({"nthreads": int(nthreads), "seconds": min(times), "all_seconds": times})
    print(json.dumps({"version": ducc0.__version__, "weight_sum": float(w.sum()), "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
