#!/usr/bin/env bash
# Checks the deployment files. Kubernetes: renders the kustomize base and the EKS, AKS and GKE
# overlays with `kubectl kustomize`, validates every object against the Kubernetes OpenAPI schema
# (kubernetes-models, installed from npm into WORK_DIR from the committed package-lock.json, so
# reruns are offline), and checks what the install guides promise about the DaemonSet. ECS: the
# cloud-init user data and the task definition. Then the agent itself must accept each
# configuration these files give it (`qcs-agent render`, offline: no runtime, no cloud detection).
#   check_manifests.sh SOURCE_DIR WORK_DIR AGENT_BINARY
set -euo pipefail
src=${1:?usage: check_manifests.sh SOURCE_DIR WORK_DIR AGENT_BINARY}
work=${2:?usage: check_manifests.sh SOURCE_DIR WORK_DIR AGENT_BINARY}
agent=${3:?usage: check_manifests.sh SOURCE_DIR WORK_DIR AGENT_BINARY}
fail() { echo "check_manifests: FAIL: $*" >&2; exit 1; }
command -v kubectl >/dev/null || fail "kubectl is missing (it renders the manifests with 'kubectl kustomize')"
kubectl kustomize --help >/dev/null 2>&1 || fail "this kubectl has no 'kustomize' command"
command -v node >/dev/null && command -v npm >/dev/null || fail "node and npm are missing (Node.js >= 20)"
[[ -x $agent ]] || fail "no agent binary at $agent"

tools=$work/tools
mkdir -p "$tools"
if ! cmp -s "$src/tests/packaging/manifests/package-lock.json" "$tools/package-lock.json" ||
  [[ ! -d $tools/node_modules/kubernetes-models ]]; then
  cp "$src/tests/packaging/manifests/package.json" "$src/tests/packaging/manifests/package-lock.json" "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error >npm.log 2>&1) ||
    { cat "$tools/npm.log" >&2; fail "npm ci of the manifest checkers failed"; }
fi
cp "$src/tests/packaging/manifests/"*.mjs "$tools/"

# --- Kubernetes -----------------------------------------------------------------------------------
declare -A prefix=(
  [base]=qcs-agent:
  [eks]=123456789012.dkr.ecr.us-east-1.amazonaws.com/qcs-agent:
  [aks]=myregistry.azurecr.io/qcs-agent:
  [gke]=us-docker.pkg.dev/my-project/qualys/qcs-agent:
)
kdir() { [[ $1 == base ]] && echo "$src/deploy/kubernetes/base" || echo "$src/deploy/kubernetes/overlays/$1"; }
rendered=()
for name in base eks aks gke; do
  out=$work/$name.yaml
  kubectl kustomize "$(kdir "$name")" >"$out" 2>"$work/$name.err" || { cat "$work/$name.err" >&2; fail "kustomize $name"; }
  rendered+=("$out")
  node "$tools/expect.mjs" "$out" "${prefix[$name]}" || fail "$name: the rendered DaemonSet breaks a promise of the docs"
done
node "$tools/validate.mjs" "${rendered[@]}" || fail "objects do not validate against the Kubernetes schema"

# --- ECS ------------------------------------------------------------------------------------------
cfg=$work/configs
rm -rf "$cfg"
mkdir -p "$cfg/secrets"
node "$tools/ecs.mjs" "$src/deploy/ecs/cloud-init.yaml" "$src/deploy/ecs/task-definition.json" "$cfg" ||
  fail "the ECS files break a promise of the docs"

# --- The agent accepts each configuration -----------------------------------------------------------
# Exit 78 = a bad key, value or contradiction. Secrets: root-only files under the fake paths.
(umask 077 && echo 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 >"$cfg/secrets/activation-id" &&
  echo a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d >"$cfg/secrets/customer-id")
render() { # NAME ARGS...: the exit code of `qcs-agent render ARGS...`, output in NAME.render
  local name=$1 rc
  shift
  set +e
  # No cloud call may leave the machine: instance metadata is off and every AWS endpoint that a
  # render could reach points at a closed loopback port.
  env AWS_EC2_METADATA_DISABLED=true AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9 \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI= AWS_CONTAINER_CREDENTIALS_FULL_URI= \
    AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= AWS_SESSION_TOKEN= \
    "$agent" render --host-root "$cfg/no-host" --set platform.detect=none "$@" >"$cfg/$name.render" 2>&1
  rc=$?
  set -e
  echo "$rc"
}
for name in base eks aks gke; do
  sed "s#/etc/qcs-agent/secrets/#$cfg/secrets/#" "$(kdir "$name")/agent.yaml" >"$cfg/$name.yaml"
  rc=$(render "$name" --config "$cfg/$name.yaml")
  [[ $rc -eq 0 ]] || { cat "$cfg/$name.render" >&2; fail "the agent refuses $name's agent.yaml (exit $rc)"; }
done
# ECS passes the task definition's environment; the image has no config file (all defaults), which
# an empty file stands for here (the test machine's own /etc/qcs-agent is none of this test's business).
: >"$cfg/empty.yaml"
rc=$(
  while read -r assignment; do export "${assignment?}"; done <"$cfg/ecs-task.env"
  render ecs-task --config "$cfg/empty.yaml"
)
[[ $rc -eq 0 ]] || { cat "$cfg/ecs-task.render" >&2; fail "the agent refuses the task definition's environment (exit $rc)"; }
# The AMI's configuration reads the IDs from Secrets Manager (here an endpoint nobody answers on:
# render reports the unreadable secrets and still renders).
rc=$(render ecs-cloud-init --config "$cfg/ecs-cloud-init.yaml" \
  --set secrets.activation_id.endpoint=http://127.0.0.1:9 --set secrets.customer_id.endpoint=http://127.0.0.1:9)
[[ $rc -eq 0 ]] || { cat "$cfg/ecs-cloud-init.render" >&2; fail "the agent refuses cloud-init's agent.yaml (exit $rc)"; }
grep -q 'aws-secretsmanager' "$cfg/ecs-cloud-init.render" ||
  { cat "$cfg/ecs-cloud-init.render" >&2; fail "cloud-init's agent.yaml does not read Secrets Manager"; }
echo "check_manifests: OK (${#rendered[@]} Kubernetes renders, ECS user data and task definition)"
