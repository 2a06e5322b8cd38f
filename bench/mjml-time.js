// Times the reference MJML compiler inside one node process, so start-up is not counted.
// Usage: node mjml-time.js FILE.mjml [RUNS]  ->  prints {"runs", "median_ms", "mean_ms", "min_ms"}
"use strict";
const fs = require("fs");
const mjml2html = require("mjml");

async function compile(source) {
  // mjml 4 returns the result; mjml 5 returns a promise of it.
  const result = await mjml2html(source, { validationLevel: "soft" });
  if (!result.html) throw new Error("mjml produced no HTML");
  return result.html.length;
}

async function main() {
  const [file, runsArg] = process.argv.slice(2);
  const runs = Number(runsArg || 50);
  const source = fs.readFileSync(file, "utf8");
  // Warm up until V8 has optimised the compiler: at least 50 runs and 2 seconds.
  const warmUntil = Date.now() + 2000;
  for (let i = 0; i < 50 || Date.now() < warmUntil; i++) await compile(source);
  const times = [];
  let bytes = 0;
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    bytes = await compile(source);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / runs;
  console.log(JSON.stringify({ runs, html_chars: bytes, median_ms: times[runs >> 1],
                               mean_ms: mean, min_ms: times[0] }));
}

main().catch((error) => { console.error(error.message); process.exit(1); });
