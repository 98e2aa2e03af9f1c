// Checks the ECS deployment files and extracts what the agent is configured with, so the test can
// run `qcs-agent render` on it: from cloud-init.yaml the agent.yaml it writes (mode 0600, before
// starting the unit), from task-definition.json the container's QCS_* environment (host network,
// the Docker socket and host paths under /host, secrets from Secrets Manager).
//   node ecs.mjs CLOUD_INIT.yaml TASK_DEFINITION.json OUT_DIR
import { readFileSync, writeFileSync } from "node:fs";
import { parse } from "yaml";

const [cloudInitFile, taskFile, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node ecs.mjs CLOUD_INIT.yaml TASK_DEFINITION.json OUT_DIR");
  process.exit(2);
}
const problems = [];
const expect = (cond, what) => cond || problems.push(what);

const cloudInitText = readFileSync(cloudInitFile, "utf8");
expect(cloudInitText.startsWith("#cloud-config\n"), "cloud-init.yaml does not start with #cloud-config");
const cloudInit = parse(cloudInitText) ?? {};
const agentYaml = (cloudInit.write_files ?? []).find((f) => f.path === "/etc/qcs-agent/agent.yaml");
expect(agentYaml, "cloud-init writes no /etc/qcs-agent/agent.yaml");
expect(agentYaml?.permissions === "0600", "cloud-init's agent.yaml is not mode 0600");
expect((cloudInit.write_files ?? []).some((f) => f.path === "/etc/ecs/ecs.config"), "cloud-init sets no ECS cluster");
const runcmd = JSON.stringify(cloudInit.runcmd ?? []);
expect(runcmd.includes("systemctl enable --now qcs-agent.service"), "cloud-init does not start the unit");
writeFileSync(`${outDir}/ecs-cloud-init.yaml`, agentYaml?.content ?? "", { mode: 0o600 });

const task = JSON.parse(readFileSync(taskFile, "utf8"));
expect(task.networkMode === "host", "task definition: networkMode is not host");
const container = (task.containerDefinitions ?? []).find((c) => c.name === "qcs-agent") ?? {};
expect(container.privileged !== true, "task definition: the agent runs privileged");
expect(container.readonlyRootFilesystem === true, "task definition: root file system is writable");
const env = Object.fromEntries((container.environment ?? []).map((e) => [e.name, e.value]));
expect(env.QCS_RUNTIME_HOST_ROOT === "/host", "task definition: QCS_RUNTIME_HOST_ROOT is not /host");
const volumes = Object.fromEntries((task.volumes ?? []).map((v) => [v.name, v.host?.sourcePath]));
for (const m of container.mountPoints ?? []) {
  expect(m.containerPath === `/host${volumes[m.sourceVolume]}`, `task definition: ${m.containerPath} is not /host + its host path`);
}
const mounted = (p) => (container.mountPoints ?? []).some((m) => volumes[m.sourceVolume] === p);
for (const p of ["/var/run/docker.sock", "/var/lib/docker", "/etc/qualys", "/var/log/qcs-agent"]) {
  expect(mounted(p), `task definition: ${p} is not mounted`);
}
const secretNames = (container.secrets ?? []).map((s) => s.name);
for (const source of ["QCS_SECRETS_ACTIVATION_ID_NAME", "QCS_SECRETS_CUSTOMER_ID_NAME"]) {
  expect(secretNames.includes(env[source]), `task definition: ${source}=${env[source]} is not one of its secrets`);
}
// The test stands in for ECS: each secret becomes a syntactically valid UUID.
const lines = Object.entries(env).map(([k, v]) => `${k}=${v}`);
secretNames.forEach((name, i) => lines.push(`${name}=00000000-0000-4000-8000-00000000000${i}`));
writeFileSync(`${outDir}/ecs-task.env`, lines.join("\n") + "\n", { mode: 0o600 });

for (const p of problems) console.error(p);
console.log(`ecs: ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
