#!/usr/bin/env bash
# Copies nats-config/{seed,leaf,trunk,dialer}.conf into the kustomize overlays (the dialer's into
# the seed's), whose
# configMapGenerator can only read files inside the overlay (kustomize's load restrictor).
#   k8s/sync-nats-config.sh          copy
#   k8s/sync-nats-config.sh --check  exit 1 (and show the diff) when a copy differs
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../nats-config"

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

status=0
# conf:overlay pairs; the seed's overlay also runs the dialer.
for pair in seed:seed leaf:leaf trunk:trunk dialer:seed; do
  role="${pair%%:*}"
  overlay="${pair##*:}"
  from="$src/$role.conf"
  to="$here/overlays/$overlay/$role.conf"
  if cmp -s "$from" "$to"; then
    continue
  fi
  if [ "$check" = 1 ]; then
    echo "k8s/overlays/$overlay/$role.conf differs from nats-config/$role.conf (run k8s/sync-nats-config.sh):" >&2
    diff -u "$from" "$to" >&2 || true
    status=1
  else
    cp "$from" "$to"
    echo "updated k8s/overlays/$overlay/$role.conf"
  fi
done
exit "$status"
