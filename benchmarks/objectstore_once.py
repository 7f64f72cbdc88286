"""One-off: save and restore of a ~100 MB frame with payloads in a bucket vs in a shared folder.

``python -m benchmarks.objectstore_once [--mb 100] [--reps 3]``

Not a registered concern (the smoke run of every concern would start an S3 server each time):
run it by hand and copy its lines into docs/performance.md. One throwaway PostgreSQL cluster
(``tests/pg_server.py``) and one S3-compatible server (moto's, ``tests/s3_server.py``, a Python
process on this machine holding objects in memory) serve both cases; the cases alternate, each
in its own database, in this one process. The folder is a local disk here (the shared-folder code
path: fsync and rename); the ratio is bucket / folder. moto is far slower than a real object
store's PUT and GET and shares this machine's cores, so the figure bounds what the code adds
(staging, the upload, the download before mapping), not what S3 would cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.objectstore_once", description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="size of the frame in MB")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each case (median)")
    args = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    import pg_server
    import s3_server

    cluster = pg_server.start()
    if isinstance(cluster, str):
        sys.exit(f"no PostgreSQL server: {cluster}")
    s3 = s3_server.start()
    if isinstance(s3, str):
        cluster.stop()
        sys.exit(f"no S3 server: {s3}")
    try:
        os.environ.update(s3.env())
        import resumable

        rows = args.mb * 1_000_000 // 32
        frame = pd.DataFrame({f"c{i}": np.random.default_rng(i).random(rows) for i in range(4)})
        with tempfile.TemporaryDirectory(prefix="rsm-bench-obj-") as tmp:
            bucket = s3.new_bucket()
            stores = {
                "folder": f"{cluster.new_database()}?payloads={tmp}/payloads",
                "bucket": f"{cluster.new_database()}?payloads=s3://{bucket}/runs",
            }
            raw_times: dict[str, list[float]] = {"put": [], "get": []}
            times: dict[str, dict[str, list[float]]] = {k: {"save": [], "restore": []} for k in stores}
            load = os.getloadavg()[0]
            for rep in range(args.reps):
                for case, url in stores.items():
                    pipe = resumable.Pipeline("bench", store=url)
                    with pipe.run(run_id=f"r{rep}") as run:
                        start = time.perf_counter()
                        run.step("make", lambda: frame)
                        times[case]["save"].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    restored = resumable.load(f"r{rep}", "make", store=url)
                    times[case]["restore"].append(time.perf_counter() - start)
                    assert restored.shape == frame.shape
                    del restored
                # The bare client on the same bytes: what the bucket costs before our code adds anything.
                fs = s3.filesystem()
                raw = Path(tmp) / "raw.bin"
                raw.write_bytes(np.random.default_rng(9).bytes(args.mb * 1_000_000))
                start = time.perf_counter()
                fs.put_file(str(raw), f"{bucket}/raw/{rep}.bin")  # type: ignore[attr-defined]
                raw_times["put"].append(time.perf_counter() - start)
                start = time.perf_counter()
                fs.get_file(f"{bucket}/raw/{rep}.bin", str(raw))  # type: ignore[attr-defined]
                raw_times["get"].append(time.perf_counter() - start)
        mb = frame.memory_usage(index=False).sum() / 1e6
        print(f"# {mb:.0f} MB frame, median of {args.reps}; 1-min load average {load:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after")  # fmt: skip
        for what in ("save", "restore"):
            bucket = statistics.median(times["bucket"][what])
            folder = statistics.median(times["folder"][what])
            print(f"{what}: bucket (moto S3) {bucket:.2f} s ({mb / bucket:.0f} MB/s) | shared folder {folder:.2f} s "
                  f"({mb / folder:.0f} MB/s) | ratio {bucket / folder:.2f}")  # fmt: skip
        put, get = statistics.median(raw_times["put"]), statistics.median(raw_times["get"])
        print(f"bare s3fs on {args.mb} MB of bytes: put_file {put:.2f} s, get_file {get:.2f} s "
              f"(our save / bare put {statistics.median(times['bucket']['save']) / put:.2f}, "
              f"our restore / bare get {statistics.median(times['bucket']['restore']) / get:.2f})")  # fmt: skip
    finally:
        from resumable._store import forget_all

        forget_all()  # the stores' sessions closed before their server stops
        s3.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
