"""Reference for `whaleid bench search`: the same exact search in numpy.

One matrix-vector product of the gallery with each query, then the top-k rows, timed per
query. BLAS threads are set by the caller (OPENBLAS/OMP/MKL_NUM_THREADS) to whaleid's count.

usage: search_reference.py GALLERY.f32 QUERIES.f32 DIM TOP THREADS  -> JSON on stdout
"""

import json
import sys
import time

import numpy as np


def main():
    gallery_path, queries_path, dim, top, threads = sys.argv[1:6]
    dim, top = int(dim), int(top)
    gallery = np.fromfile(gallery_path, dtype="<f4").reshape(-1, dim)
    queries = np.fromfile(queries_path, dtype="<f4").reshape(-1, dim)
    k = min(top, gallery.shape[0])

    def search(q):
        q = q / max(np.linalg.norm(q), 1e-12)
        scores = gallery @ q
        if k < scores.shape[0]:
            best = np.argpartition(-scores, k - 1)[:k]
        else:
            best = np.arange(scores.shape[0])
        return best[np.argsort(-scores[best])]

    for q in queries[:3]:  # warm-up, as whaleid's
        search(q)
    times, top1 = [], []
    for q in queries:
        start = time.perf_counter()
        best = search(q)
        times.append((time.perf_counter() - start) * 1e3)
        top1.append(int(best[0]))
    times.sort()
    pick = lambda p: times[round((len(times) - 1) * p)]
    print(json.dumps({
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
        "version": np.__version__,
        "threads": int(threads),
        "top1_rows": top1,
    }))


if __name__ == "__main__":
    main()
