// Validates Kubernetes objects of KEDA's kinds against KEDA's CRD schemas.
// Reads a JSON array of objects on stdin; prints one line per object that fails
// ("Kind name: what is wrong") and exits 1 if any does, 2 on a kind it has no schema for.
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

const objects = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => (text += chunk));
  process.stdin.on("end", () => resolve(text));
}));

let failed = 0;
for (const object of objects) {
  const name = `${object.kind} ${object.metadata?.name ?? "(no name)"}`;
  const Model = object.apiVersion === "keda.sh/v1alpha1" ? keda[object.kind] : undefined;
  if (typeof Model !== "function") {
    console.log(`${name}: no KEDA schema for ${object.apiVersion} ${object.kind}`);
    process.exit(2);
  }
  try {
    new Model(object).validate();
  } catch (error) {
    console.log(`${name}: ${error.message}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);
