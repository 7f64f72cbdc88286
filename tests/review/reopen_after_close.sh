#!/bin/sh
# Usage (root, loop devices, cgroup v1 blkio): sh tests/review/reopen_after_close.sh CHECKOUT
set -e
W=$(mktemp -d); mkdir -p $W/m $W/s
truncate -s 1G $W/img; mkfs.ext4 -q $W/img
LOOP=$(losetup -f --show $W/img); mount $LOOP $W/m
G=/sys/fs/cgroup/blkio/review-slow-$$; mkdir $G
echo "$(lsblk -no MAJ:MIN $LOOP | tr -d ' ') 20971520" > $G/blkio.throttle.write_bps_device   # 20 MB/s
sh -c "echo \$\$ > $G/cgroup.procs; exec env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$1 RESUMABLE_GROUP_COMMIT_MS=50 python $(dirname "$0")/reopen_after_close.py $W/m/store.duckdb" || true
umount $W/m; losetup -d $LOOP; rmdir $G; rm -rf $W
