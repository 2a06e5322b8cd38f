// Times the reference MJML compiler inside one node process, so start-up is not counted.
// Usage: node mjml-time.js FILE.mjml
// Warms up, prints "ready", then for each number N read from stdin compiles FILE N times and
// prints {"runs", "html_chars", "median_ms", "mean_ms", "min_ms"}: bench/render.py alternates
// these rounds with its own, so both sides see the same machine.
"use strict";
const fs = require("fs");
const readline = require("readline");
const mjml2html = require("mjml");

async function compile(source) {
  // mjml 4 returns the result; mjml 5 returns a promise of it.
  const result = await mjml2html(source, { validationLevel: "soft" });
  if (!result.html) throw new Error("mjml produced no HTML");
  return result.html.length;
}

async function round(source, runs) {
  const times = [];
  let chars = 0;
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    chars = await compile(source);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / runs;
  return { runs, html_chars: chars, median_ms: times[runs >> 1], mean_ms: mean, min_ms: times[0] };
}

async function main() {
  const source = fs.readFileSync(process.argv[2], "utf8");
  // Warm up until V8 has optimised the compiler: at least 50 runs and 2 seconds.
  const warmUntil = Date.now() + 2000;
  for (let i = 0; i < 50 || Date.now() < warmUntil; i++) await compile(source);
  console.log("ready");
  for await (const line of readline.createInterface({ input: process.stdin })) {
    console.log(JSON.stringify(await round(source, Number(line) || 50)));
  }
}

main().catch((error) => { console.error(error.message); process.exit(1); });
