import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, root));

Deno.test("Deno's version is pinned in one place and the README, CI and runtime agree", async () => {
  const version = (await read(".deno-version")).trim();
  assert.match(version, /^\d+\.\d+\.\d+$/);
  assert.equal(Deno.version.deno, version, "the tests run on the pinned Deno");
  const readme = await read("README.md");
  assert.ok(readme.includes(`npx -y deno@${version} task demo`), "README's demo command");
  assert.ok(readme.includes(`npx -y deno@${version} task test`), "README's test command");
  const ci = await read(".ci/run");
  assert.match(ci, /npx -y "deno@\$\(cat \.deno-version\)" task test/);
});

Deno.test("the test task runs the checks and the tests with sanitizers on", async () => {
  const config = JSON.parse(await read("deno.json"));
  const task: string = config.tasks.test;
  for (
    const step of ["fmt --check", "lint", "deno check", "doc --lint mod.ts", "publish --dry-run"]
  ) {
    assert.ok(`${task} ${config.tasks.check}`.includes(step), `the test task runs ${step}`);
  }
  assert.match(task, /--sanitize-ops/);
  assert.match(task, /--sanitize-resources/);
});
