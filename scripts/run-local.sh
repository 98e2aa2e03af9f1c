#!/usr/bin/env bash
# Runs qcs-agent in the foreground on this machine's Docker engine with the stand-in sensor image:
# the agent's main job on a local default. Installs what it needs, builds the agent, starts
# dockerd if none answers, builds the stand-in image, writes a demo configuration, then runs
#   qcs-agent run --config /tmp/qcs-local/agent.yaml
# Ctrl-C stops the agent; the sensor keeps running (supervision.on_stop: leave). Remove it with
#   docker rm -f qualys-container-sensor
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target qcs-agent

sock=/var/run/docker.sock
if ! curl -sf --max-time 3 --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; then
  echo "run-local: no Docker engine answers on $sock; starting dockerd (log: /var/log/qcs-local-dockerd.log)"
  # Host networking only: this machine has no bridge networking.
  nohup dockerd --bridge=none --iptables=false --ip-masq=false >/var/log/qcs-local-dockerd.log 2>&1 &
  for _ in $(seq 60); do
    curl -sf --max-time 1 --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1 && break
    sleep 1
  done
fi

image=qcs-standin:local
if ! docker image inspect "$image" >/dev/null 2>&1; then
  tests/fixtures/standin/build-image.sh "$image"
fi

dir=/tmp/qcs-local
mkdir -p "$dir/secrets"
chmod 700 "$dir"
# Demo IDs in the Qualys format; a real node gets them from a Secret or Secrets Manager.
printf '%s\n' "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d" >"$dir/secrets/customer-id"
chmod 600 "$dir/secrets/customer-id"
cat >"$dir/agent.yaml" <<YAML
runtime:
  kind: auto
sensor:
  image: $image
  pull_policy: never
  resources: {cpu_request: 100m, cpu_limit: 500m, memory_request: 32Mi, memory_limit: 128Mi}
secrets:
  activation_id: {source: env, name: QUALYS_ACTIVATION_ID}
  customer_id: {source: file, path: $dir/secrets/customer-id}
YAML
export QUALYS_ACTIVATION_ID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0
exec build/release/agent/qcs-agent run --config "$dir/agent.yaml" "$@"
