#!/usr/bin/env python3
"""RFI flags of the same planes with AOFlagger, for `horizons bench pipeline`.

    python aoflagger-flag.py DIR

DIR holds what the bench wrote: params.json {"strategy": "generic" | "jvla" | a .lua path,
"repeats", "groups": [{"rows", "cols", "npol", "baselines"}]}, planes.f32 and entry.u8. Per
group (a spectral window) and baseline, planes.f32 carries 2 x npol images of cols x rows
float32 (channel-major: a row of the image is one channel over time) in the order pol 0 real,
pol 0 imaginary, pol 1 real, ...; entry.u8 carries the baseline's entry mask (1 = flagged on
entry, every polarisation) in the same cols x rows layout.

The image sets are built before the clock starts; the clock covers `strategy.run` of every
baseline not fully flagged on entry (the bench's flagger skips those too), wall time and this
process's CPU time, fastest of `repeats` passes. The flags of the last pass go to flags.u8
(layout of entry.u8); one JSON line with the timings goes to stdout.
"""
import json
import os
import sys
import time

import numpy as np

TELESCOPES = {"generic": "Generic", "jvla": "JVLA"}


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: aoflagger-flag.py DIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    try:
        import aoflagger
    except ImportError as e:
        print(f"cannot import aoflagger: {e}", file=sys.stderr)
        return 3
    with open(os.path.join(d, "params.json")) as f:
        p = json.load(f)
    flagger = aoflagger.AOFlagger()
    name = p["strategy"]
    if name in TELESCOPES:
        path = flagger.find_strategy_file(getattr(aoflagger.TelescopeId, TELESCOPES[name]))
    else:
        path = name
    strategy = flagger.load_strategy_file(path)
    planes = np.fromfile(os.path.join(d, "planes.f32"), dtype=np.float32)
    entry = np.fromfile(os.path.join(d, "entry.u8"), dtype=np.uint8)
    jobs = []  # (offset into entry / flags, image set, entry mask), None image set = skipped
    at_planes = at_entry = 0
    for g in p["groups"]:
        rows, cols, npol, nbl = int(g["rows"]), int(g["cols"]), int(g["npol"]), int(g["baselines"])
        n = rows * cols
        for _ in range(nbl):
            images = planes[at_planes : at_planes + 2 * npol * n].reshape(2 * npol, cols, rows)
            mask = entry[at_entry : at_entry + n].reshape(cols, rows)
            if mask.all():
                jobs.append((at_entry, None, None))
            else:
                s = flagger.make_image_set(rows, cols, 2 * npol)
                for i in range(2 * npol):
                    s.set_image_buffer(i, images[i])
                m = flagger.make_flag_mask(rows, cols, False)
                m.set_buffer(mask.astype(bool))
                jobs.append((at_entry, s, m))
            at_planes += 2 * npol * n
            at_entry += n
    if at_planes != planes.size or at_entry != entry.size:
        print(f"inconsistent inputs: {planes.size} floats and {entry.size} mask bytes, groups describe "
              f"{at_planes} and {at_entry}", file=sys.stderr)
        return 4
    flags = np.ones(entry.size, dtype=np.uint8)
    best_wall = best_cpu = float("inf")
    for _ in range(max(1, int(p["repeats"]))):
        results = []
        w0, c0 = time.perf_counter(), time.process_time()
        for _, s, m in jobs:
            results.append(None if s is None else strategy.run(s, m))
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    for (at, s, _), r in zip(jobs, results):
        if r is not None:
            b = np.asarray(r.get_buffer(), dtype=np.uint8)
            flags[at : at + b.size] = b.reshape(-1)
    flags.tofile(os.path.join(d, "flags.u8"))
    print(json.dumps({
        "version": flagger.get_version_string(),
        "strategy": os.path.basename(path),
        "seconds": best_wall,
        "cpu_seconds": best_cpu,
        "baselines_run": sum(1 for _, s, _ in jobs if s is not None),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
