#!/usr/bin/env node
// Builds a Levee policy plugin from a JavaScript module into a WebAssembly component.
//
//   node sdk/js/build.mjs PLUGIN.js OUT.wasm [--wit DIR] [--world NAME] [--debug]
//
// It calls the componentize-js JS API (not the jco CLI, whose sandboxed wasm-tools cannot read
// the WIT path) against `sdk/wit` and world `plugin`, with every StarlingMonkey WASI feature
// disabled, so the component imports only `levee:policy/host@0.1.0` and exports
// `levee:policy/policy@0.1.0`. Dependencies: `npm ci` in sdk/js first.

import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import process from 'node:process';

const sdkDir = dirname(fileURLToPath(import.meta.url));

function usage(message) {
  if (message) {
    console.error(`build.mjs: ${message}`);
  }
  console.error('usage: node build.mjs PLUGIN.js OUT.wasm [--wit DIR] [--world NAME] [--debug]');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { wit: resolve(sdkDir, '..', 'wit'), world: 'plugin', debug: false, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--wit' || arg === '--world') {
      if (i + 1 >= argv.length) {
        usage(`${arg} needs a value`);
      }
      opts[arg.slice(2)] = argv[++i];
    } else if (arg === '--debug') {
      opts.debug = true;
    } else if (arg === '-h' || arg === '--help') {
      usage();
    } else if (arg.startsWith('--')) {
      usage(`unknown option ${arg}`);
    } else {
      opts.positional.push(arg);
    }
  }
  if (opts.positional.length !== 2) {
    usage('expected PLUGIN.js and OUT.wasm');
  }
  return opts;
}

/** The deepest directory holding both paths. */
function commonAncestor(a, b) {
  const left = a.split(sep);
  const right = b.split(sep);
  let n = 0;
  while (n < left.length && n < right.length && left[n] === right[n]) {
    n++;
  }
  return left.slice(0, n).join(sep) || sep;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const source = resolve(opts.positional[0]);
  const out = resolve(opts.positional[1]);
  const wit = resolve(opts.wit);

  let componentize;
  try {
    ({ componentize } = await import('@bytecodealliance/componentize-js'));
  } catch (err) {
    console.error(`build.mjs: cannot load componentize-js (run \`npm ci\` in ${sdkDir}): ${err}`);
    process.exit(1);
  }

  // componentize-js maps the working directory into the engine while it pre-initializes the
  // module, so relative imports resolve only inside it. Work from the deepest directory that
  // holds both the plugin and this SDK, so `import ... from '<...>/sdk/js/levee.js'` works.
  process.chdir(commonAncestor(dirname(source), sdkDir));

  const started = performance.now();
  const { component } = await componentize({
    sourcePath: source,
    witPath: wit,
    worldName: opts.world,
    // No WASI at all: no stdio (console.*), random, clocks or fetch. Plugins use the host's
    // `log` and `now-ms` instead.
    disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
    debugBuild: opts.debug,
  });
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, component);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.error(`built ${opts.positional[1]} (${component.length} bytes) in ${seconds}s`);
}

main().catch((err) => {
  console.error(`build.mjs: ${err?.stack ?? err}`);
  process.exit(1);
});
