// Checks what the install guides promise about a rendered qcs-agent kustomization, beyond schema
// validity: one Namespace, ServiceAccount, ConfigMap and DaemonSet; the host mounts under /host; the
// probes; scraping; tolerations; the rolling update; the Secret reference; the image's registry.
//   node expect.mjs RENDERED.yaml IMAGE_PREFIX
import { readFileSync } from "node:fs";
import { parseAllDocuments, parse } from "yaml";

const [file, imagePrefix] = process.argv.slice(2);
if (!file || imagePrefix === undefined) {
  console.error("usage: node expect.mjs RENDERED.yaml IMAGE_PREFIX");
  process.exit(2);
}
const objects = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS()).filter(Boolean);
const problems = [];
const expect = (cond, what) => cond || problems.push(what);
const one = (kind) => {
  const found = objects.filter((o) => o.kind === kind);
  expect(found.length === 1, `expected one ${kind}, found ${found.length}`);
  return found[0] ?? {};
};

one("Namespace");
one("ServiceAccount");
const cm = one("ConfigMap");
const ds = one("DaemonSet");
const pod = ds.spec?.template?.spec ?? {};
const c = (pod.containers ?? []).find((x) => x.name === "qcs-agent") ?? {};

expect(ds.spec?.updateStrategy?.type === "RollingUpdate", "updateStrategy is not RollingUpdate");
expect(pod.hostNetwork === true, "hostNetwork is not true");
expect(c.image?.startsWith(imagePrefix), `image ${c.image} does not start with ${imagePrefix}`);
expect(c.livenessProbe?.httpGet?.path === "/livez", "liveness probe is not GET /livez");
expect(c.readinessProbe?.httpGet?.path === "/readyz", "readiness probe is not GET /readyz");
const ann = ds.spec?.template?.metadata?.annotations ?? {};
expect(ann["prometheus.io/scrape"] === "true" && ann["prometheus.io/port"] === "9819", "no Prometheus scrape annotations");
expect(c.resources?.requests && c.resources?.limits, "no resource requests and limits");
expect((pod.tolerations ?? []).some((t) => t.key === "node-role.kubernetes.io/control-plane"), "control-plane nodes not tolerated");
expect(c.securityContext?.privileged !== true, "the agent runs privileged");

const volumes = Object.fromEntries((pod.volumes ?? []).map((v) => [v.name, v]));
const mountAt = (path) => (c.volumeMounts ?? []).find((m) => m.mountPath === path);
const hostMount = (hostPath, readOnly) => {
  const m = mountAt(`/host${hostPath}`);
  expect(m, `${hostPath} is not mounted at /host${hostPath}`);
  if (!m) return;
  expect(volumes[m.name]?.hostPath?.path === hostPath, `/host${hostPath} is not the hostPath ${hostPath}`);
  expect(Boolean(m.readOnly) === readOnly, `/host${hostPath} should be ${readOnly ? "read-only" : "writable"}`);
};
hostMount("/run/containerd", true);
hostMount("/var/lib/containerd", true);
hostMount("/var/lib/docker", true);
hostMount("/etc/qualys", false);
hostMount("/var/log/qcs-agent", false);
hostMount("/sys/fs/cgroup", true);
const secretMount = mountAt("/etc/qcs-agent/secrets");
expect(secretMount && volumes[secretMount.name]?.secret?.secretName === "qcs-agent-secrets", "Secret qcs-agent-secrets not mounted");
const configMount = mountAt("/etc/qcs-agent/config");
expect(configMount && volumes[configMount.name]?.configMap?.name === cm.metadata?.name, "the ConfigMap is not mounted");

const config = parse(cm.data?.["agent.yaml"] ?? "") ?? {};
expect(config.runtime?.host_root === "/host", "agent.yaml: runtime.host_root is not /host");
expect(config.secrets?.activation_id?.path?.startsWith("/etc/qcs-agent/secrets/"), "agent.yaml: activation_id not from the Secret");
expect(config.secrets?.customer_id?.path?.startsWith("/etc/qcs-agent/secrets/"), "agent.yaml: customer_id not from the Secret");
const listen = (c.env ?? []).find((e) => e.name === "QCS_HTTP_LISTEN");
expect(listen?.value === "$(POD_IP):9819", "QCS_HTTP_LISTEN is not the pod (node) IP");

for (const p of problems) console.error(`${file}: ${p}`);
console.log(`${file}: ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
