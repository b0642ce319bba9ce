#!/usr/bin/env node
// The reference JSONLogic implementation (json-logic-js, pinned in package.json) as a long-running process.
//
// Protocol, one JSON document per line:
//   stdin:  a batch  [[rule, data], ...]
//   stdout: its results, in order  [{"ok": value} | {"error": message}, ...]
// A line that is not a batch gets {"fatal": message} instead of a list; the process keeps serving.
//
// Results are written as JSON, except that NaN, Infinity and -Infinity are written as those bare words
// (which Python's json module reads as floats): JSON.stringify would turn them into null, and then a
// NaN or -Infinity that should have been null, or the reverse, would pass unseen. As in JSON, -0 is
// written 0, undefined in an array null, and an object property that is undefined is left out.
"use strict";

const readline = require("readline");
const jsonLogic = require("json-logic-js");

// The `log` operator prints with console.log, which would corrupt the protocol on stdout.
console.log = function () {};

function encode(value) {
  if (typeof value === "number") {
    return Number.isFinite(value) ? JSON.stringify(value) : String(value);
  }
  if (Array.isArray(value)) {
    return "[" + value.map(encode).join(",") + "]";
  }
  if (value !== null && typeof value === "object") {
    const members = Object.keys(value).filter((key) => value[key] !== undefined);
    return "{" + members.map((key) => JSON.stringify(key) + ":" + encode(value[key])).join(",") + "}";
  }
  const text = JSON.stringify(value); // string, boolean, null; undefined gives undefined
  return text === undefined ? "null" : text;
}

function evaluate([rule, data]) {
  let value;
  try {
    value = jsonLogic.apply(rule, data);
  } catch (err) {
    return JSON.stringify({ error: String(err && err.message ? err.message : err) });
  }
  return '{"ok":' + encode(value) + "}";
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
