#!/bin/sh
# Usage (root, loop devices): sh tests/review/fsyncgate_replay.sh CHECKOUT
# As fsyncgate.sh, but the kernel is SIGKILLed after its fsync failed; the next process replays its log
# (the page cache still holds the bytes, so the replay's size and digest check passes), then a reboot
# (the payload's clean pages dropped) shows the committed row points at bytes that never reached the disk.
set -e
W=$(mktemp -d); mkdir -p $W/t $W/m
mount -t tmpfs -o size=64m tmpfs $W/t
truncate -s 512M $W/t/img
mkfs.ext4 -q -O ^has_journal $W/t/img
LOOP=$(losetup -f --show $W/t/img)
mount -o errors=continue $LOOP $W/m
head -c 38000000 /dev/zero > $W/t/filler
export FG_DIGEST=$W/digest PYTHONPATH=$1 PYTHONDONTWRITEBYTECODE=1 RESUMABLE_GROUP_COMMIT_MS=50
python "$(dirname "$0")/fsyncgate_replay_kernel.py" $W/m/store.duckdb $W/t/filler || echo "kernel exit $?"
python - $W/m/store.duckdb <<'PY' || true
import hashlib, os, sys, duckdb, resumable
from resumable._store import registry
store = sys.argv[1]
print("replayed:", [(s.step, s.state.value) for s in registry.open_store(store).list_steps("r1")])
registry.open_store(store).close()
con = duckdb.connect(store, read_only=True)
files = con.execute("SELECT file FROM checkpoints WHERE file IS NOT NULL").fetchall()
con.close()
for (f,) in files:  # what a reboot does to the payload's clean pages
    fd = os.open(os.path.join(store + ".payloads", f), os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
try:
    v = resumable.load("r1", "big", "b", store=store)
    print("loaded; matches:", open(os.environ["FG_DIGEST"]).read() == hashlib.sha256(v).hexdigest())
except Exception as e:
    print("load:", type(e).__name__, str(e)[:200])
PY
umount $W/m; losetup -d $LOOP; umount $W/t; rm -rf $W
