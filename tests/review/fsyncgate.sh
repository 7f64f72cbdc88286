#!/bin/sh
# Usage (root, loop devices): sh tests/review/fsyncgate.sh CHECKOUT  -- a 40 MB payload written behind onto ext4 whose backing store is full
# during the deferred fsync; space comes back; then the committed row is checked against the disk.
set -e
W=$(mktemp -d); rm -rf $W; mkdir -p $W/t $W/m
mount -t tmpfs -o size=64m tmpfs $W/t
truncate -s 512M $W/t/img
mkfs.ext4 -q -O ^has_journal $W/t/img
LOOP=$(losetup -f --show $W/t/img)
mount -o errors=continue $LOOP $W/m
head -c 38000000 /dev/zero > $W/t/filler   # about 20 MB of backing store left
export FG_DIGEST=$W/digest PYTHONPATH=$1 PYTHONDONTWRITEBYTECODE=1 RESUMABLE_GROUP_COMMIT_MS=50
python "$(dirname "$0")/fsyncgate_kernel.py" $W/m/store.duckdb $W/t/filler || true
python - $W/m/store.duckdb <<'PY' || true
import sys, os, duckdb, resumable
store = sys.argv[1]
con = duckdb.connect(store, read_only=True)
print("committed:", con.execute("SELECT step, state FROM steps").fetchall())
files = con.execute("SELECT file, digest FROM checkpoints WHERE file IS NOT NULL").fetchall()
con.close()
for f, _ in files:  # drop the clean pages of the payload: what a reboot does
    fd = os.open(os.path.join(store + ".payloads", f), os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
try:
    v = resumable.load("r1", "big", "b", store=store)
    print("loaded", len(v), "bytes; matches:", open(os.environ["FG_DIGEST"]).read() == __import__("hashlib").sha256(v).hexdigest())
except Exception as e:
    print("load:", type(e).__name__, str(e)[:300])
PY
umount $W/m; losetup -d $LOOP; umount $W/t; rm -rf $W
