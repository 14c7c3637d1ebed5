// Bundle the snippet's modules into one file and minify it: `node build.mjs ENTRY OUTPUT`.
// Run by scripts/build-snippet, which installs this directory's locked packages first. The
// same sources and package-lock.json always give the same bytes.
import { writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import swc from '@swc/core';
import { parse } from 'acorn';
import { build } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The hand-written snippet this replaced parsed as ES2015; browsers that ran it still can.
const ECMA = 2015;

const [entry, output] = process.argv.slice(2);
if (!entry || !output) throw new Error('usage: node build.mjs ENTRY OUTPUT');

const bundle = await build({
  absWorkingDir: ROOT, // esbuild's comments name paths relative to it: no machine paths
  entryPoints: [entry],
  bundle: true,
  format: 'iife',
  target: 'es' + ECMA,
  charset: 'utf8',
  // ES modules are strict, an IIFE in a classic script is not unless it says so
  banner: { js: '"use strict";' },
  write: false,
  logLevel: 'warning',
});

// swc rather than terser: about 50 bytes fewer gzipped, as it inlines the start-up functions
// that main.js calls once.
const { code } = swc.minifySync(bundle.outputFiles[0].text, {
  compress: { passes: 3, ecma: ECMA },
  mangle: true,
  ecma: ECMA,
  format: { ascii_only: false, comments: false },
});

parse(code, { ecmaVersion: ECMA }); // throws if newer syntax got through
writeFileSync(resolve(output), code + '\n');
