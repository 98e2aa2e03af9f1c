// Validates every object of one or more rendered multi-document YAML files against the Kubernetes
// OpenAPI schema, using kubernetes-models (its validators are generated from that schema: types,
// required fields, formats such as int32 and int-or-string). An object whose apiVersion/kind has no
// model is an error, not a pass. Exit 0 when every object validates; 1 with one line per problem.
//   node validate.mjs FILE...
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// apiVersion "apps/v1" -> "kubernetes-models/apps/v1/DaemonSet"; core "v1" -> "kubernetes-models/v1/X".
function modulePath(apiVersion, kind) {
  if (!/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

async function validateObject(obj, where) {
  if (obj === null || typeof obj !== "object") return [`${where}: not an object`];
  const { apiVersion, kind } = obj;
  const path = modulePath(String(apiVersion ?? ""), String(kind ?? ""));
  if (!path) return [`${where}: missing or malformed apiVersion/kind (${apiVersion} ${kind})`];
  let model;
  try {
    model = await import(path);
  } catch {
    return [`${where}: no Kubernetes schema for ${apiVersion} ${kind}`];
  }
  const Model = model[kind];
  try {
    new Model(obj).validate();
  } catch (e) {
    const details = (e.errors ?? []).map((x) => `${x.instancePath || "/"} ${x.message}`).join("; ");
    return [`${where} (${kind} ${obj.metadata?.name ?? "?"}): ${details || e.message}`];
  }
  return [];
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE...");
  process.exit(2);
}
let problems = [];
let count = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const [i, doc] of docs.entries()) {
    if (doc.errors.length) {
      problems.push(`${file} document ${i + 1}: YAML error: ${doc.errors[0].message}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    count++;
    problems = problems.concat(await validateObject(obj, `${file} document ${i + 1}`));
  }
}
for (const p of problems) console.error(p);
console.log(`validated ${count} objects in ${files.length} file(s): ${problems.length} problem(s)`);
process.exit(problems.length || count === 0 ? 1 : 0);
