#!/usr/bin/env bash
# The benchmark harness (issue 8): qcs-agent against what an operator would use instead, measured
# in one run on one machine. Run as root:
#   bench/run.sh
# It installs what it lacks (scripts/setup.sh), builds the release preset unless QCS_AGENT names an
# agent binary, starts its OWN dockerd and containerd under a temp dir (never the machine's), builds
# the stand-in sensor image in each, measures, and writes bench/results/<YYYY-MM-DD>.md (also
# printed). Everything it started is stopped and removed on exit, error or Ctrl-C.
#
# Settings (environment):
#   QCS_BENCH_RUNS            repetitions of each timed measurement (default 20)
#   QCS_BENCH_IDLE_SECONDS    idle-supervision window for the footprint (default 300)
#   QCS_BENCH_SCRAPE_SECONDS  wrk duration at each scrape rate (default 30; 5 when RUNS < 10)
#   QCS_BENCH_RESULTS_DIR     where the results file goes (default bench/results)
#   QCS_AGENT, QCS_BENCH_PROBE, QCS_MICRO_BENCH   prebuilt binaries (skip the build)
#   QCS_BENCH_KEEP_WORK       set: keep the work dir (logs, raw samples) after the run
# Quick mode: QCS_BENCH_RUNS=3 QCS_BENCH_IDLE_SECONDS=20 bench/run.sh (a few minutes).
#
# Timing: qcs_bench_probe (bench/probe.cpp) subscribes to the runtime's events (Docker /events,
# `ctr events`), then starts the action and stops a CLOCK_MONOTONIC stopwatch when the start event
# of the sensor container arrives; the agent and each alternative are timed by that same observer.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
runs=${QCS_BENCH_RUNS:-20}
idle_seconds=${QCS_BENCH_IDLE_SECONDS:-300}
if ((runs < 10)); then scrape_default=5; else scrape_default=30; fi
scrape_seconds=${QCS_BENCH_SCRAPE_SECONDS:-$scrape_default}
results_dir=${QCS_BENCH_RESULTS_DIR:-$here/results}

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root: it starts its own dockerd and containerd (sudo $0)"
for tool in wrk dockerd containerd ctr runc curl jq busybox docker; do
  if ! command -v "$tool" >/dev/null; then
    say "$tool is missing; installing the project's packages (scripts/setup.sh)"
    "$repo/scripts/setup.sh"
    break
  fi
done

if [[ -z "${QCS_AGENT:-}" ]]; then
  say "building the release preset"
  (cd "$repo" && cmake --preset release >/dev/null &&
    cmake --build --preset release --target qcs-agent qcs_bench_probe qcs_micro_bench)
  QCS_AGENT=$repo/build/release/agent/qcs-agent
fi
build_dir=$(cd "$(dirname "$QCS_AGENT")/.." && pwd)
probe=${QCS_BENCH_PROBE:-$build_dir/bench/qcs_bench_probe}
micro=${QCS_MICRO_BENCH:-$build_dir/bench/qcs_micro_bench}
agent=$QCS_AGENT
for binary in "$agent" "$probe" "$micro"; do
  [[ -x "$binary" ]] || die "$binary is not an executable (build the release preset, or set QCS_AGENT etc.)"
done

work=$(mktemp -d /tmp/qcs-bench-XXXXXX)
chmod 700 "$work"
suffix=$(basename "$work" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
# Names unique to this run: runc state and cgroups of containerd namespaces are machine-wide.
sensor=qcs-bench-sensor
ns=qcs-bench-$suffix
image=qcs-standin:bench
cimage=docker.io/library/$image
dsock=$work/docker/docker.sock
csock=$work/containerd/c.sock
pids_to_stop=()

# ---- teardown ------------------------------------------------------------------------------------
# Whether pid is alive. A detached agent is reparented to PID 1, which may not reap it: a zombie
# counts as gone.
alive() { [[ -r /proc/$1/stat ]] && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
stop_pid() {  # SIGTERM, wait up to 20 s, then SIGKILL
  local pid=$1
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 200); do
    alive "$pid" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  for pid in "${pids_to_stop[@]}"; do stop_pid "$pid"; done
  if [[ -S "$dsock" ]]; then
    local ids
    ids=$(dk ps -aq 2>/dev/null)
    [[ -n "$ids" ]] && dk rm -f $ids >/dev/null 2>&1
  fi
  [[ -n "${dockerd_pid:-}" ]] && stop_pid "$dockerd_pid"
  if [[ -S "$csock" ]]; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$id" >/dev/null 2>&1; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      for _ in $(seq 50); do ctr_ tasks delete "$id" >/dev/null 2>&1 && break || sleep 0.1; done
      ctr_ containers delete "$id" >/dev/null 2>&1
    done
    ctr_ images rm "$cimage" >/dev/null 2>&1
  fi
  [[ -n "${containerd_pid:-}" ]] && stop_pid "$containerd_pid"
  # Shims outlive containerd by design; only ours name our socket on their command line.
  for shim in $(pgrep -f "containerd-shim.*-address $csock" 2>/dev/null); do kill -KILL "$shim" 2>/dev/null; done
  # runc leaves this run's namespace (/<ns>, and /<ns>/<id> of a task killed here) in every cgroup
  # hierarchy; rmdir removes only empty groups, never one that still holds a process.
  for group in /sys/fs/cgroup/"$ns" /sys/fs/cgroup/*/"$ns"; do
    [[ -d $group && ! -L $group ]] || continue
    for sub in "$group"/*/; do [[ -d $sub ]] && rmdir "$sub" 2>/dev/null; done
    rmdir "$group" 2>/dev/null
  done
  # Deepest mounts first, then the tree.
  for mount in $(awk -v w="$work" '$2 ~ "^"w {print $2}' /proc/self/mounts | sort -r); do umount -l "$mount"; done
  if [[ -n "${QCS_BENCH_KEEP_WORK:-}" ]]; then
    say "kept $work (QCS_BENCH_KEEP_WORK)"
  else
    rm -rf "$work"
  fi
  [[ $status -ne 0 ]] && say "failed (exit $status); everything it started has been stopped"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dk() { docker -H "unix://$dsock" --config "$work/docker/cli" "$@"; }
ctr_() { ctr --address "$csock" -n "$ns" "$@"; }

wait_until() {  # wait_until SECONDS CMD...: polls CMD every 50 ms until it succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# ---- statistics ----------------------------------------------------------------------------------
# median and p99 (nearest rank) of the numbers in a file, "-" when it is empty.
median() { sort -g "$1" | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f", m}'; }
p99() { sort -g "$1" | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} r=int(0.99*NR); if (r<0.99*NR) r++; printf "%.1f", v[r]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="-"||b=="-"||b==0) print "-"; else printf "%.2f", a/b }'; }
met() { awk -v v="$1" -v l="$2" 'BEGIN { if (v=="-") print "n/a"; else if (v+0 <= l+0) print "yes"; else print "**no**" }'; }

rows=()

# ---- private daemons -----------------------------------------------------------------------------
start_dockerd() {
  mkdir -p "$work/docker/data" "$work/docker/exec" "$work/docker/cli"
  echo '{}' >"$work/docker/daemon.json"
  # No bridge, no iptables: the containers use the host network (loopback only traffic).
  dockerd --config-file="$work/docker/daemon.json" -H "unix://$dsock" --data-root="$work/docker/data" \
    --exec-root="$work/docker/exec" --pidfile="$work/docker/docker.pid" --bridge=none --iptables=false \
    --ip-masq=false --shutdown-timeout=5 >"$work/docker/dockerd.log" 2>&1 &
  dockerd_pid=$!
  wait_until 60 curl -sf --unix-socket "$dsock" http://docker/_ping ||
    die "the bench dockerd did not answer /_ping within 60 s; see its log: $(tail -5 "$work/docker/dockerd.log")"
}

start_containerd() {
  mkdir -p "$work/containerd/root" "$work/containerd/state"
  cat >"$work/containerd/config.toml" <<EOF
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$csock"
[ttrpc]
  address = "$work/containerd/c.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
EOF
  containerd --config "$work/containerd/config.toml" >"$work/containerd/containerd.log" 2>&1 &
  containerd_pid=$!
  wait_until 60 ctr --address "$csock" version ||
    die "the bench containerd did not answer within 60 s; see its log: $(tail -5 "$work/containerd/containerd.log")"
  ctr --address "$csock" namespaces create "$ns"
}

# ---- the agent -----------------------------------------------------------------------------------
printf '%s\n' "66666666-7777-8888-9999-000000000000" >"$work/customer-id"
chmod 600 "$work/customer-id"
export QCS_BENCH_ACTIVATION_ID=11111111-2222-3333-4444-555555555555

write_agent_config() {  # write_agent_config FILE RUNTIME-SECTION PORT
  cat >"$1" <<EOF
$2
sensor:
  image: $image
  pull_policy: never
  name: $sensor
  resources: {cpu_request: 250m, cpu_limit: 500m, memory_request: 512Mi, memory_limit: 1Gi}
secrets:
  activation_id: {source: env, name: QCS_BENCH_ACTIVATION_ID}
  customer_id: {source: file, path: $work/customer-id}
supervision:
  # The smallest legal delay (initial must be > 0), constant: the agent restarts at once.
  backoff: {initial: 1ms, max: 1ms, multiplier: 1, jitter: 0, reset_after: 10m}
platform: {detect: none}
http: {listen: "127.0.0.1:$3"}
logging: {level: info, format: text}
EOF
  chmod 600 "$1"
}

agent_state() {  # the sensor state from the agent's /status
  curl -sf --max-time 2 "http://127.0.0.1:$1/status" | jq -r '.sensor.state // empty'
}
agent_running() { [[ "$(agent_state "$1")" == running ]]; }

# ---- docker helpers ------------------------------------------------------------------------------
docker_running() { [[ "$(dk inspect -f '{{.State.Running}}' "$sensor" 2>/dev/null)" == true ]]; }
docker_absent() { ! dk inspect "$sensor" >/dev/null 2>&1; }
docker_remove() {
  dk rm -f "$sensor" >/dev/null 2>&1 || true
  wait_until 30 docker_absent || die "the sensor container $sensor would not go away"
}
ctr_running() { ctr_ tasks ls 2>/dev/null | awk -v n="$sensor" '$1==n && $3=="RUNNING" {f=1} END {exit !f}'; }
ctr_pid() { ctr_ tasks ls 2>/dev/null | awk -v n="$sensor" '$1==n {print $2}'; }
ctr_remove() {
  ctr_ tasks kill -s KILL "$sensor" >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    ctr_ tasks delete "$sensor" >/dev/null 2>&1 && break
    ctr_ tasks ls -q 2>/dev/null | grep -qx "$sensor" || break
    sleep 0.05
  done
  ctr_ containers delete "$sensor" >/dev/null 2>&1 || true
  ! ctr_ containers ls -q | grep -qx "$sensor" || die "the containerd sensor $sensor would not go away"
}

log_tail() {  # the end of the --log file among the probe's arguments, to say why a timing failed
  while (($#)); do
    if [[ "$1" == --log && -f "${2:-}" ]]; then
      printf '\n--- the end of %s:\n%s' "$2" "$(tail -15 "$2")"
      return
    fi
    shift
  done
}

# probe_docker OUTFILE [probe options] -- CMD...: appends the elapsed ms; echoes the CMD's pid.
probe_docker() {
  local out=$1
  shift
  local line
  line=$("$probe" docker --socket "$dsock" --name "$sensor" "$@") || die "timing failed: $*$(log_tail "$@")"
  echo "${line%% *}" >>"$out"
  echo "${line##* }"
}
probe_ctr() {
  local out=$1
  shift
  local line
  line=$("$probe" containerd --address "$csock" --namespace "$ns" --id "$sensor" "$@") ||
    die "timing failed: $*$(log_tail "$@")"
  echo "${line%% *}" >>"$out"
  echo "${line##* }"
}

start_agent_timed() {  # start_agent_timed VAR PROBE-FN OUTFILE CONFIG LOG: sets VAR to the agent's pid
  local pid
  pid=$("$2" "$3" --detach --log "$5" -- "$agent" run --config "$4")
  pids_to_stop+=("$pid")
  printf -v "$1" '%s' "$pid"
}

# ---- machine -------------------------------------------------------------------------------------
machine() {
  echo "- CPU: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc) cores online"
  echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "- kernel: $(uname -r); distro: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- cgroup: $(stat -fc %T /sys/fs/cgroup)"
  echo "- docker: $(dockerd --version); containerd: $(containerd --version | awk '{print $3}'); runc: $(runc --version | head -1 | awk '{print $3}')"
  echo "- load generator: $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}') (Debian)"
  echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shows up here)"
}

say "work dir $work"
machine_text=$(machine)
start_dockerd
start_containerd
say "building the stand-in sensor image in both runtimes"
"$repo/tests/fixtures/standin/build-image.sh" "$image" "unix://$dsock" >/dev/null
dk save "$image" | ctr_ images import - >/dev/null
ctr_ images ls -q | grep -qx "$cimage" || die "the stand-in image did not import into containerd as $cimage"

dport=$("$probe" free-port)
cport=$("$probe" free-port)
while [[ "$cport" == "$dport" ]]; do cport=$("$probe" free-port); done
write_agent_config "$work/agent-docker.yaml" "runtime: {kind: docker, endpoint: $dsock}" "$dport"
write_agent_config "$work/agent-containerd.yaml" \
  "runtime: {kind: containerd, endpoint: $csock, containerd_namespace: $ns, containerd_log_dir: $work/sensor-logs}" \
  "$cport"

# ---- the agent's spec, as the alternatives will run it --------------------------------------------
say "deriving the sensor spec from the agent's own container"
start_agent_timed apid probe_docker "$work/warmup.ms" "$work/agent-docker.yaml" "$work/agent-docker.log"
dk inspect "$sensor" >"$work/sensor-inspect.json"
stop_pid "$apid"
docker_remove
# The create body the agent sends (runtime/docker createContainerBody), taken from what it created.
jq '.[0] | {Image: .Config.Image, Cmd: .Config.Cmd, Env: .Config.Env, Labels: .Config.Labels,
  HostConfig: (.HostConfig | {Mounts, CapAdd, Privileged, RestartPolicy, NetworkMode, CpuShares, NanoCpus,
  MemoryReservation, Memory, MemorySwap})}' "$work/sensor-inspect.json" >"$work/create.json"
# The same spec as `docker run` flags, one per line.
jq -r '.[0] as $c | $c.HostConfig as $h |
  ["--network=" + $h.NetworkMode] +
  ($h.CapAdd // [] | map("--cap-add=" + .)) +
  ($c.Config.Env // [] | map("--env=" + .)) +
  ($c.Config.Labels // {} | to_entries | map("--label=" + .key + "=" + .value)) +
  ($h.Mounts // [] | map("--mount=type=bind,source=" + .Source + ",target=" + .Target + (if .ReadOnly then ",readonly" else "" end))) +
  ["--cpu-shares=\($h.CpuShares)", "--cpus=\($h.NanoCpus / 1e9)", "--memory-reservation=\($h.MemoryReservation)",
   "--memory=\($h.Memory)", "--memory-swap=\($h.MemorySwap)"] | .[]' "$work/sensor-inspect.json" >"$work/run-flags"
mapfile -t run_flags <"$work/run-flags"
mapfile -t sensor_args < <(jq -r '.[0].Config.Cmd // [] | .[]' "$work/sensor-inspect.json")

start_agent_timed apid probe_ctr "$work/warmup.ms" "$work/agent-containerd.yaml" "$work/agent-containerd.log"
ctr_ containers info "$sensor" >"$work/ctr-info.json"
stop_pid "$apid"
ctr_remove
# `ctr run` flags for the same spec: env, bind mounts, capabilities, cpu and memory limits.
jq -r '.Spec as $s |
  ["--net-host"] +
  ($s.process.env // [] | map("--env=" + .)) +
  ($s.mounts // [] | map(select(.type == "bind" and (.source | startswith("/")) and
     (.destination | IN("/etc/resolv.conf", "/etc/hosts", "/etc/hostname") | not))) |
     map("--mount=type=bind,src=" + .source + ",dst=" + .destination + ",options=" + (.options | join(":")))) +
  ($s.process.capabilities.bounding // [] | map(select(IN("CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID"))) |
     map("--cap-add=" + .)) +
  (if $s.linux.resources.memory.limit then ["--memory-limit=\($s.linux.resources.memory.limit)"] else [] end) +
  (if $s.linux.resources.cpu.shares then ["--cpu-shares=\($s.linux.resources.cpu.shares)"] else [] end) +
  (if $s.linux.resources.cpu.quota then ["--cpu-quota=\($s.linux.resources.cpu.quota)",
     "--cpu-period=\($s.linux.resources.cpu.period)"] else [] end) |
  .[]' "$work/ctr-info.json" >"$work/ctr-flags"
mapfile -t ctr_flags <"$work/ctr-flags"
# ctr run's trailing arguments replace the whole command (the entrypoint too).
mapfile -t ctr_args < <(jq -r '.Spec.process.args[]' "$work/ctr-info.json")

# ---- cold start ----------------------------------------------------------------------------------
say "cold start, $runs runs each"
for i in $(seq "$runs"); do
  start_agent_timed apid probe_docker "$work/cold-agent-docker.ms" "$work/agent-docker.yaml" "$work/agent-docker.log"
  stop_pid "$apid"
  docker_remove
  probe_docker "$work/cold-docker-run.ms" --log "$work/alt.log" -- \
    docker -H "unix://$dsock" --config "$work/docker/cli" run -d --name "$sensor" "${run_flags[@]}" "$image" \
    "${sensor_args[@]}" >/dev/null
  docker_remove
  # One curl process, two requests: create, then start.
  probe_docker "$work/cold-docker-api.ms" --log "$work/alt.log" -- \
    curl -sSf --fail-early --unix-socket "$dsock" -H 'Content-Type: application/json' --data-binary "@$work/create.json" \
    "http://docker/containers/create?name=$sensor" --next --unix-socket "$dsock" -X POST \
    "http://docker/containers/$sensor/start" >/dev/null
  docker_remove

  start_agent_timed apid probe_ctr "$work/cold-agent-containerd.ms" "$work/agent-containerd.yaml" \
    "$work/agent-containerd.log"
  stop_pid "$apid"
  ctr_remove
  probe_ctr "$work/cold-ctr-run.ms" --log "$work/alt.log" -- \
    ctr --address "$csock" -n "$ns" run -d "${ctr_flags[@]}" "$cimage" "$sensor" "${ctr_args[@]}" >/dev/null
  ctr_remove
  say "cold start run $i/$runs done"
done

# What the agent's process start costs before it does anything: `qcs-agent version` loads the same
# shared libraries and runs the same static initialisers as `run`, then exits.
startup_libs=$(ldd "$agent" | grep -c '=>' || true)
startup_stat=$(perf stat -r 20 -x, -e task-clock "$agent" version 2>&1 >/dev/null | awk -F, '/task-clock/ {printf "%.1f", $1}' || true)
startup_profile="(perf is not available here)"
if command -v perf >/dev/null && perf record -F 20000 -o "$work/startup.data" -- "$agent" version >/dev/null 2>&1; then
  startup_profile=$(perf report -i "$work/startup.data" --stdio --no-children --sort dso 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -n 8 || true)
fi

# ---- recovery ------------------------------------------------------------------------------------
say "recovery, $runs runs each"
# The agent supervising: kill -9 of the sensor's PID 1, until it runs again.
start_agent_timed apid probe_docker "$work/warmup.ms" "$work/agent-docker.yaml" "$work/agent-docker.log"
for i in $(seq "$runs"); do
  wait_until 30 agent_running "$dport" || die "the agent did not report the sensor running (see $work/agent-docker.log)"
  pid=$(dk inspect -f '{{.State.Pid}}' "$sensor")
  probe_docker "$work/rec-agent-docker.ms" -- kill -9 "$pid" >/dev/null
done
stop_pid "$apid"
docker_remove

# Docker's restart policy. A fresh container each run: Docker doubles its 100 ms delay for a
# container that ran under 10 s, so reusing one would time Docker's backoff, not its best case.
for i in $(seq "$runs"); do
  dk run -d --name "$sensor" --restart=always "${run_flags[@]}" "$image" "${sensor_args[@]}" >/dev/null
  wait_until 30 docker_running || die "the --restart=always sensor did not start"
  pid=$(dk inspect -f '{{.State.Pid}}' "$sensor")
  probe_docker "$work/rec-docker-restart.ms" -- kill -9 "$pid" >/dev/null
  docker_remove
done

# A systemd-style respawn loop of `docker run` (systemd is not PID 1 here, so the loop it would be).
(while true; do
  docker -H "unix://$dsock" --config "$work/docker/cli" run --rm --name "$sensor" "${run_flags[@]}" "$image" \
    "${sensor_args[@]}" >>"$work/loop.log" 2>&1 || true # exits 137 when killed; errexit must not end the loop
  sleep 0.1
done) &
loop_pid=$!
pids_to_stop+=("$loop_pid")
for i in $(seq "$runs"); do
  wait_until 30 docker_running || die "the respawn loop's sensor did not start"
  pid=$(dk inspect -f '{{.State.Pid}}' "$sensor")
  probe_docker "$work/rec-docker-loop.ms" -- kill -9 "$pid" >/dev/null
done
stop_pid "$loop_pid"
docker_remove

# containerd: the agent, and a respawn loop of `ctr run --rm`.
start_agent_timed apid probe_ctr "$work/warmup.ms" "$work/agent-containerd.yaml" "$work/agent-containerd.log"
for i in $(seq "$runs"); do
  wait_until 30 agent_running "$cport" || die "the agent did not report the sensor running (see $work/agent-containerd.log)"
  pid=$(ctr_pid)
  probe_ctr "$work/rec-agent-containerd.ms" -- kill -9 "$pid" >/dev/null
done
stop_pid "$apid"
ctr_remove
(while true; do
  ctr --address "$csock" -n "$ns" run --rm "${ctr_flags[@]}" "$cimage" "$sensor" "${ctr_args[@]}" \
    >>"$work/loop.log" 2>&1 </dev/null || true
  sleep 0.1
done) &
loop_pid=$!
pids_to_stop+=("$loop_pid")
for i in $(seq "$runs"); do
  wait_until 30 ctr_running || die "the ctr respawn loop's sensor did not start"
  pid=$(ctr_pid)
  probe_ctr "$work/rec-ctr-loop.ms" -- kill -9 "$pid" >/dev/null
done
stop_pid "$loop_pid"
ctr_remove

# ---- footprint (both runtimes at once: two idle agents do not disturb each other) ---------------
say "footprint: ${idle_seconds}s of idle supervision on each runtime"
start_agent_timed dpid probe_docker "$work/warmup.ms" "$work/agent-docker.yaml" "$work/agent-docker.log"
start_agent_timed cpid probe_ctr "$work/warmup.ms" "$work/agent-containerd.yaml" "$work/agent-containerd.log"
wait_until 30 agent_running "$dport" || die "the docker agent did not report running"
wait_until 30 agent_running "$cport" || die "the containerd agent did not report running"
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
d_cpu0=$(cpu_ticks "$dpid")
c_cpu0=$(cpu_ticks "$cpid")
t0=$SECONDS
while ((SECONDS - t0 < idle_seconds)); do
  for r in docker:$dpid containerd:$cpid; do
    alive "${r#*:}" || die "the ${r%%:*} agent exited during the idle window"
    echo "$(status_kib "${r#*:}" VmRSS)" >>"$work/rss-${r%%:*}.kib"
    echo "$(status_kib "${r#*:}" RssAnon)" >>"$work/anon-${r%%:*}.kib"
    echo "$(status_kib "${r#*:}" RssFile)" >>"$work/file-${r%%:*}.kib"
  done
  sleep 1  # the sampling period, not a wait for a condition
done
elapsed=$((SECONDS - t0))
d_cpu=$(($(cpu_ticks "$dpid") - d_cpu0))
c_cpu=$(($(cpu_ticks "$cpid") - c_cpu0))
smaps_profile() {  # smaps_rollup and the top mappings by Rss (KiB), grouped by file
  echo '```'
  grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Anonymous|Private_Dirty|Shared_Clean|Private_Clean)' "/proc/$1/smaps_rollup"
  echo
  awk '/^[0-9a-f]+-[0-9a-f]+ / {name = (NF >= 6) ? $6 : "[anonymous]"} /^Rss:/ {rss[name] += $2}
    END {for (n in rss) if (rss[n] > 0) printf "%8d KiB  %s\n", rss[n], n}' "/proc/$1/smaps" | sort -rn | head -12
  echo '```'
}
profile_docker=$(smaps_profile "$dpid")
profile_containerd=$(smaps_profile "$cpid")
pss_docker=$(awk '$1=="Pss:" {print $2}' "/proc/$dpid/smaps_rollup")
pss_containerd=$(awk '$1=="Pss:" {print $2}' "/proc/$cpid/smaps_rollup")
threads_docker=$(status_kib "$dpid" Threads)
threads_containerd=$(status_kib "$cpid" Threads)

# ---- scrape --------------------------------------------------------------------------------------
say "scrape: wrk at 100 and 1000 requests/s, ${scrape_seconds}s each"
stop_pid "$cpid"
ctr_remove
scrape_bytes=$(curl -sf -o /dev/null -w '%{size_download}' "http://127.0.0.1:$dport/metrics")
cat >"$work/pace.lua" <<'EOF'
-- Paces each connection: wrk waits delay() ms before each request, and times a request from its
-- first byte written, so the pause is not counted as latency. wrk is closed-loop: the offered rate
-- is connections / (delay + latency), reported as achieved req/s next to the target.
local pause = tonumber(os.getenv("QCS_WRK_DELAY_MS"))
function delay() return pause end
function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d %d\n", latency:percentile(50), latency:percentile(99),
    summary.requests, summary.bytes, summary.duration, errors))
end
EOF
scrape() {  # scrape RATE CONNECTIONS [PATH]: "p50_ms p99_ms achieved_rps bytes_per_response errors requests"
  local delay_ms=$((1000 * $2 / $1)) threads=$(($2 < 2 ? 1 : 2)) path=${3:-/metrics}
  QCS_WRK_DELAY_MS=$delay_ms wrk -t"$threads" -c"$2" -d"${scrape_seconds}s" -s "$work/pace.lua" \
    "http://127.0.0.1:$dport$path" >"$work/wrk-$1.txt" 2>&1 || die "wrk failed: $(cat "$work/wrk-$1.txt")"
  awk '/^RESULT/ {printf "%.3f %.3f %.1f %.0f %d %d\n", $2/1000, $3/1000, $4/($6/1e6), $5/$4, $7, $4}' "$work/wrk-$1.txt"
}
sched_total() {  # sched_total PID: "on-CPU ns, run-queue wait ns" summed over the process's threads
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{c += $1; w += $2} END {printf "%d %d\n", c, w}'
}
# The same rate against /livez (no rendering, a few bytes) separates the server's work from the
# machine's wake-up and scheduling latency.
scrape 100 1 /livez >"$work/scrape-livez"
# The agent's CPU and run-queue wait per request over the 100 req/s run, and a CPU profile of it.
read -r sched_cpu0 sched_wait0 < <(sched_total "$dpid")
perf_pid=""
if command -v perf >/dev/null; then
  perf record -F 2000 -g -p "$dpid" -o "$work/perf.data" -- sleep "$scrape_seconds" >"$work/perf-record.log" 2>&1 &
  perf_pid=$!
fi
scrape 100 1 >"$work/scrape-100"
read -r sched_cpu1 sched_wait1 < <(sched_total "$dpid")
scrape_profile="(perf is not available here)"
if [[ -n $perf_pid ]]; then
  wait "$perf_pid" || true
  scrape_profile=$(perf report -i "$work/perf.data" --stdio --no-children --sort dso,sym 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -n 15 || true)
  [[ -n $scrape_profile ]] || scrape_profile="(perf recorded no samples: $(tail -n 2 "$work/perf-record.log"))"
fi
scrape 1000 10 >"$work/scrape-1000"
read -r s100_p50 s100_p99 s100_rps s100_bytes s100_err s100_requests <"$work/scrape-100"
read -r s1000_p50 s1000_p99 s1000_rps s1000_bytes s1000_err s1000_requests <"$work/scrape-1000"
read -r live_p50 live_p99 live_rps live_bytes live_err live_requests <"$work/scrape-livez"
per_request_cpu_us=$(awk -v a="$sched_cpu0" -v b="$sched_cpu1" -v n="$s100_requests" 'BEGIN {printf "%.0f", (b - a) / (n > 0 ? n : 1) / 1000}')
per_request_wait_us=$(awk -v a="$sched_wait0" -v b="$sched_wait1" -v n="$s100_requests" 'BEGIN {printf "%.0f", (b - a) / (n > 0 ? n : 1) / 1000}')
stop_pid "$dpid"
docker_remove

# ---- microbenchmarks -----------------------------------------------------------------------------
say "microbenchmarks"
min_time=$(awk -v r="$runs" 'BEGIN {print (r < 10) ? 0.05 : 0.5}')
"$micro" --benchmark_format=json --benchmark_min_time="$min_time" >"$work/micro.json" 2>"$work/micro.err" ||
  die "qcs_micro_bench failed: $(cat "$work/micro.err")"

# ---- the table -----------------------------------------------------------------------------------
row_timed() {  # row_timed METRIC AGENT-FILE ALT-NAME ALT-FILE TARGET-RATIO
  local am ap bm bp r
  am=$(median "$2") ap=$(p99 "$2") bm=$(median "$4") bp=$(p99 "$4")
  r=$(ratio "$am" "$bm")
  if [[ -n "$5" ]]; then
    add_row "$1" "$am / $ap" "$3" "$bm / $bp" "$r" "≤ $5×" "$(met "$r" "$5")"
  else
    add_row "$1" "$am / $ap" "$3" "$bm / $bp" "$r" "—" "—"
  fi
}
add_row() { rows+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 |"); }
row_timed "cold start, Docker (ms)" "$work/cold-agent-docker.ms" "raw API create+start (curl)" "$work/cold-docker-api.ms" 1.1
row_timed "cold start, Docker (ms)" "$work/cold-agent-docker.ms" "\`docker run -d\`" "$work/cold-docker-run.ms" ""
row_timed "cold start, containerd (ms)" "$work/cold-agent-containerd.ms" "\`ctr run -d\`" "$work/cold-ctr-run.ms" ""
row_timed "recovery after SIGKILL, Docker (ms)" "$work/rec-agent-docker.ms" "\`--restart=always\`" "$work/rec-docker-restart.ms" 1.1
row_timed "recovery after SIGKILL, Docker (ms)" "$work/rec-agent-docker.ms" "respawn loop of \`docker run --rm\`" "$work/rec-docker-loop.ms" ""
row_timed "recovery after SIGKILL, containerd (ms)" "$work/rec-agent-containerd.ms" "respawn loop of \`ctr run --rm\`" "$work/rec-ctr-loop.ms" ""

mib() { awk -v k="$1" 'BEGIN {if (k=="-") print "-"; else printf "%.1f", k/1024}'; }
for r in docker:8 containerd:16; do
  rt=${r%%:*} limit=${r#*:}
  rss_med=$(mib "$(median "$work/rss-$rt.kib")") rss_p99=$(mib "$(p99 "$work/rss-$rt.kib")")
  add_row "RSS total, $rt (MiB)" "$rss_med / $rss_p99" "—" "—" "—" "≤ $limit MiB" "$(met "$rss_p99" "$limit")"
  add_row "RSS anonymous / file, $rt (MiB)" "$(mib "$(median "$work/anon-$rt.kib")") / $(mib "$(median "$work/file-$rt.kib")")" \
    "—" "—" "—" "—" "—"
  pss=pss_$rt
  add_row "Pss at the end (shared pages split among their users), $rt (MiB)" "$(mib "${!pss}")" "—" "—" "—" "—" "—"
done
d_pct=$(awk -v t="$d_cpu" -v hz="$ticks" -v s="$elapsed" 'BEGIN {printf "%.3f", 100 * t / hz / s}')
c_pct=$(awk -v t="$c_cpu" -v hz="$ticks" -v s="$elapsed" 'BEGIN {printf "%.3f", 100 * t / hz / s}')
add_row "idle CPU, docker (% of a core; CPU s over ${elapsed}s)" "$d_pct ($(awk -v t="$d_cpu" -v hz="$ticks" 'BEGIN {printf "%.2f", t/hz}') s)" "—" "—" "—" "< 0.1%" "$(awk -v v="$d_pct" 'BEGIN {print (v < 0.1) ? "yes" : "**no**"}')"
add_row "idle CPU, containerd (% of a core; CPU s over ${elapsed}s)" "$c_pct ($(awk -v t="$c_cpu" -v hz="$ticks" 'BEGIN {printf "%.2f", t/hz}') s)" "—" "—" "—" "< 0.1%" "$(awk -v v="$c_pct" 'BEGIN {print (v < 0.1) ? "yes" : "**no**"}')"
add_row "/metrics p50 / p99 at 100 req/s (ms; achieved ${s100_rps} req/s, ${s100_err} errors)" "$s100_p50 / $s100_p99" "—" "—" "—" "p99 < 2 ms" "$(awk -v v="$s100_p99" 'BEGIN {print (v < 2) ? "yes" : "**no**"}')"
add_row "/livez p50 / p99 at 100 req/s, the same server without rendering (ms; achieved ${live_rps} req/s)" "$live_p50 / $live_p99" "—" "—" "—" "—" "—"
add_row "/metrics p50 / p99 at 1000 req/s (ms; achieved ${s1000_rps} req/s, ${s1000_err} errors)" "$s1000_p50 / $s1000_p99" "—" "—" "—" "—" "—"
add_row "bytes per scrape (body / whole response)" "$scrape_bytes / $s100_bytes" "—" "—" "—" "—" "—"
while read -r name value unit; do
  add_row "micro: $name ($unit per op)" "$value" "—" "—" "—" "—" "—"
done < <(jq -r '.benchmarks[] | "\(.name) \(.real_time | . * 1000 | round / 1000) \(.time_unit)"' "$work/micro.json")

# ---- what dominates where a target is missed -----------------------------------------------------
notes() {
  local missed=0
  if [[ "$(met "$(p99 "$work/rss-docker.kib" | awk '{print $1/1024}')" 8)" != yes ||
    "$(met "$(p99 "$work/rss-containerd.kib" | awk '{print $1/1024}')" 16)" != yes ]]; then
    missed=1
    echo "### RSS"
    echo "Where the resident memory is: smaps of the idle agent (${threads_docker} threads on Docker, ${threads_containerd} on"
    echo "containerd). RssFile, the pages of the binary and its shared libraries that it touched, is most of VmRSS; they"
    echo "are shared with every other process mapping the same libraries, which is why Pss is well below Rss. The"
    echo "Docker agent maps libgrpc, libprotobuf and libcrypto although only the containerd client uses gRPC."
    echo "What would fix it: link the containerd client (gRPC, protobuf) only into a containerd build or load it on"
    echo "demand; link statically with \`-ffunction-sections -Wl,--gc-sections\` so untouched library code is not"
    echo "mapped; for the anonymous part, fewer threads and \`MALLOC_ARENA_MAX=2\`. Judge the node's cost by Pss."
    echo
    echo "Docker:"
    echo "$profile_docker"
    echo
    echo "containerd:"
    echo "$profile_containerd"
    echo
  fi
  local r
  r=$(ratio "$(median "$work/rec-agent-docker.ms")" "$(median "$work/rec-docker-restart.ms")")
  if [[ "$(met "$r" 1.1)" != yes ]]; then
    missed=1
    echo "### Recovery"
    echo "The agent's path is: die event → its backoff (1 ms here) → start → start event; Docker's restart policy"
    echo "acts inside dockerd without an API round trip. The agent's log of the last recoveries (timestamps per step):"
    echo '```'
    grep -E 'exited with code|starting sensor|sensor .* started' "$work/agent-docker.log" | tail -6
    echo '```'
    echo "What would fix it: whatever the log shows between the exit and \`starting sensor\` beyond the backoff."
    echo
  fi
  r=$(ratio "$(median "$work/cold-agent-docker.ms")" "$(median "$work/cold-docker-api.ms")")
  if [[ "$(met "$r" 1.1)" != yes ]]; then
    missed=1
    echo "### Cold start"
    echo "The agent's time from exec includes what the raw API path does not: loading the config and secrets,"
    echo "binding the HTTP listener, finding the runtime (ping, version) and the look-ups it makes before the create."
    echo "The agent's log of its last cold start (timestamps per phase; the create and the start are the shared part):"
    echo '```'
    grep -E 'starting; sensor|listening on|using (docker|containerd)|created sensor|sensor .* started' \
      "$work/agent-docker.log" | tail -5
    echo '```'
    echo "Process start alone (\`qcs-agent version\`, which loads the same $startup_libs shared libraries and runs the same"
    echo "static initialisers, then exits) costs ${startup_stat:-?} ms of CPU (\`perf stat -r 20\`); where it goes"
    echo "(\`perf record\`, by library):"
    echo '```'
    echo "$startup_profile"
    echo '```'
    echo "The dynamic loader (symbol lookup and relocation, with \`-z now\`) and the kernel (mapping and faulting in the"
    echo "libraries) dominate: gRPC, protobuf and about 40 Abseil libraries for the containerd client are loaded on"
    echo "Docker nodes too, and libcurl brings GnuTLS, Kerberos, LDAP and SASL. What would fix it: load the containerd"
    echo "client (a separate shared object) only when containerd is the runtime, and link the rest statically with"
    echo "\`--gc-sections\`; in the log above, Docker's \`/version\` (asked only to log the daemon's version, which"
    echo "\`/_ping\`'s Server header already carries) and a second \`/_ping\` after detection are the other avoidable"
    echo "requests before the create."
    echo
  fi
  if awk -v a="$d_pct" -v b="$c_pct" 'BEGIN {exit !(a >= 0.1 || b >= 0.1)}'; then
    missed=1
    echo "### Idle CPU"
    echo "The idle agent should wake only for its reconcile interval (30 s) and the sensor's resource sample; more"
    echo "than that points to a polling loop. \`perf record -g -p <agent pid>\` over the idle window shows which; the"
    echo "fix is to block on the event source (curl_multi_poll, the gRPC stream) instead of waking on a timer."
    echo "With a short window, a couple of clock ticks (10 ms each) already reach 0.1%: trust the 300 s run."
    echo
  fi
  if awk -v v="$s100_p99" 'BEGIN {exit !(v >= 2)}'; then
    missed=1
    echo "### Scrape"
    echo "At 100 req/s the agent spent ${per_request_cpu_us} µs of CPU per request (all its threads, from"
    echo "/proc/<pid>/task/*/schedstat) and its threads waited ${per_request_wait_us} µs per request on the run queue."
    echo "/livez, served by the same thread without rendering, had p50 / p99 ${live_p50} / ${live_p99} ms in this run,"
    echo "against ${s100_p50} / ${s100_p99} ms for /metrics. Where the agent's CPU went during the 100 req/s run"
    echo "(\`perf record -g -p <agent>\`, self time by library and symbol):"
    echo '```'
    echo "$scrape_profile"
    echo '```'
    if awk -v v="$live_p99" 'BEGIN {exit !(v >= 2)}'; then
      echo "/livez, which does no work, misses the target as well: the tail is the machine's wake-up and scheduling"
      echo "latency (wrk, both daemons and the agent share the cores), not the rendering. The server's own cost is the"
      echo "CPU per request above. What would fix it is outside the agent: an idle core for the scraper, or a quieter"
      echo "machine; caching the rendered text would only shave the CPU per request."
    else
      echo "/livez meets the target in the same run, so the tail is the /metrics work itself (rendering and the larger"
      echo "write; the profile says which). What would fix it: cache the rendered text for a scrape interval (a second)."
    fi
    echo
  fi
  ((missed)) || echo "Every target is met in this run."
}

date_tag=$(date -u +%F)
mkdir -p "$results_dir"
results=$results_dir/$date_tag.md
{
  echo "# qcs-agent benchmark, $date_tag"
  echo
  echo "\`bench/run.sh\` with QCS_BENCH_RUNS=$runs, QCS_BENCH_IDLE_SECONDS=$idle_seconds, QCS_BENCH_SCRAPE_SECONDS=$scrape_seconds;"
  echo "agent $("$agent" version 2>/dev/null | head -1)."
  echo
  echo "## Machine"
  echo "$machine_text"
  echo
  echo "## Results"
  echo "Times are median / p99 (nearest rank, so with $runs runs the p99 is the worst run)."
  echo
  echo "| metric | qcs-agent | alternative | alternative | ratio (median) | target | met? |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "## Method"
  echo "- Private dockerd and containerd (own sockets, data and exec roots under /tmp, no bridge, no iptables); host"
  echo "  network only; the stand-in sensor (busybox-static, tests/fixtures/standin) in both, image already present."
  echo "- \"Sensor running\" is the runtime's own start event (Docker \`/events\` \`start\`, containerd \`/tasks/start\`),"
  echo "  received by qcs_bench_probe, which subscribes first, then starts the action; both ends are CLOCK_MONOTONIC in"
  echo "  one process. The same observer times the agent and every alternative."
  echo "- Same spec everywhere: the alternatives' flags and the raw API body are derived from the container the agent"
  echo "  created (args, env, labels, bind mounts, capabilities, CPU shares and limit, memory reservation and limit;"
  echo "  \`ctr run\` has no memory reservation flag)."
  echo "- The agent's restart backoff is set to **1 ms constant** (initial 1ms, max 1ms, multiplier 1, jitter 0; the"
  echo "  smallest legal value: initial must be > 0). Docker's restart policy waits 100 ms before its first restart and"
  echo "  doubles that for a container that ran under 10 s, so each \`--restart=always\` run uses a fresh container."
  echo "- The respawn loops sleep 0.1 s between runs, as \`RestartSec=100ms\` would."
  echo "- Footprint: /proc/<agent>/status VmRSS, RssAnon, RssFile every second and utime+stime over the idle window,"
  echo "  both agents side by side with their sensors running (reconcile interval 30 s)."
  echo "- Scrape: Debian's wrk (closed loop) with a Lua \`delay()\` pacing each connection (1 connection at 100 req/s,"
  echo "  10 at 1000 req/s); latency is timed from the request's first byte, so the pause is not counted. Debian has no"
  echo "  wrk2 (\`-R\`); the achieved rate is shown next to each target rate."
  echo "- Microbenchmarks: bench/micro_bench.cpp (Google Benchmark), real time per operation."
  echo
  echo "## Where targets are missed"
  notes
} >"$results"

cat "$results"
say "results written to $results"
