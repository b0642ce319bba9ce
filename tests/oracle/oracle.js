#!/usr/bin/env node
// The reference JSONLogic implementation (json-logic-js, pinned in package.json) as a long-running process.
//
// Protocol, one JSON document per line:
//   stdin:  a batch  [[rule, data], ...]
//   stdout: its results, in order  [{"ok": value} | {"error": message}, ...]
// A line that is not a batch gets {"fatal": message} instead of a list; the process keeps serving.
//
// Results go through JSON.stringify, so NaN and +-Infinity arrive as null and -0 as 0; a top-level
// undefined is sent as null too. The Python client normalises its own values the same way.
"use strict";

const readline = require("readline");
const jsonLogic = require("json-logic-js");

// The `log` operator prints with console.log, which would corrupt the protocol on stdout.
console.log = function () {};

function evaluate([rule, data]) {
  let value;
  try {
    value = jsonLogic.apply(rule, data);
  } catch (err) {
    return JSON.stringify({ error: String(err && err.message ? err.message : err) });
  }
  try {
    return JSON.stringify({ ok: value === undefined ? null : value });
  } catch (err) {
    return JSON.stringify({ error: "oracle: result is not JSON: " + String(err && err.message) });
  }
}

function answer(line) {
  let batch;
  try {
    batch = JSON.parse(line);
  } catch (err) {
    return JSON.stringify({ fatal: "not JSON: " + err.message });
  }
  if (!Array.isArray(batch) || !batch.every((c) => Array.isArray(c) && c.length === 2)) {
    return JSON.stringify({ fatal: "expected a batch [[rule, data], ...]" });
  }
  return "[" + batch.map(evaluate).join(",") + "]";
}

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", (line) => {
  if (line.trim() !== "") {
    process.stdout.write(answer(line) + "\n");
  }
});
