#!/usr/bin/env node
// Fails when the crate's modules depend on each other in a circle. Two levels are checked:
// the top-level modules (`formats`, `governance`, …, each a folder or a file under src/), and
// the modules inside each folder (`governance::budget` and `governance::limits`, say). A
// dependency is any `crate::a::b` path in a file of another module, `use` lines or not.
//
// Usage: node scripts/check-layers.mjs [src-dir]   (exit 1 and the cycles listed, or exit 0)
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";

const src = process.argv[2] ?? "src";

function rustFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...rustFiles(path));
    else if (name.endsWith(".rs")) out.push(path);
  }
  return out;
}

// The module path of a file: src/governance/limits/mod.rs → ["governance", "limits"].
function modulePath(file) {
  const parts = relative(src, file).split(sep);
  const last = parts.pop().replace(/\.rs$/, "");
  if (last !== "mod" && last !== "lib") parts.push(last);
  return parts;
}

// Comments and string literals can name paths that are not dependencies.
function code(text) {
  return text
    .replace(/\/\/[^\n]*/g, "")
    .replace(/"(?:[^"\\]|\\.)*"/g, '""');
}

const files = rustFiles(src).map((file) => ({ file, path: modulePath(file), text: code(readFileSync(file, "utf8")) }));

// Edges at one level: `depth` 1 → top-level modules; 2 → modules inside a folder.
function graph(depth) {
  const edges = new Map();
  for (const { file, path, text } of files) {
    if (path.length < depth) continue;
    const from = path.slice(0, depth).join("::");
    for (const m of text.matchAll(/\bcrate((?:::[a-z_][a-z0-9_]*)+)/g)) {
      const target = m[1].split("::").slice(1);
      if (target.length < depth) continue;
      // Inside a folder only its own modules count; across folders the top level decides.
      if (depth > 1 && target.slice(0, depth - 1).join("::") !== path.slice(0, depth - 1).join("::")) continue;
      const to = target.slice(0, depth).join("::");
      if (to === from) continue;
      if (!edges.has(from)) edges.set(from, new Map());
      if (!edges.get(from).has(to)) edges.get(from).set(to, relative(".", file));
    }
  }
  return edges;
}

// Strongly connected components with more than one member are the cycles (Tarjan).
function cycles(edges) {
  let index = 0;
  const idx = new Map(), low = new Map(), stack = [], on = new Set(), out = [];
  const nodes = new Set([...edges.keys(), ...[...edges.values()].flatMap((m) => [...m.keys()])]);
  const visit = (v) => {
    idx.set(v, index); low.set(v, index); index++;
    stack.push(v); on.add(v);
    for (const w of edges.get(v)?.keys() ?? []) {
      if (!idx.has(w)) { visit(w); low.set(v, Math.min(low.get(v), low.get(w))); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do { w = stack.pop(); on.delete(w); comp.push(w); } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of [...nodes].sort()) if (!idx.has(v)) visit(v);
  return out;
}

let failed = false;
for (const [depth, what] of [[1, "top-level modules"], [2, "modules inside a folder"]]) {
  const edges = graph(depth);
  for (const comp of cycles(edges)) {
    failed = true;
    console.error(`module cycle between ${what}: ${comp.join(" ↔ ")}`);
    for (const from of comp) {
      for (const [to, file] of edges.get(from) ?? []) {
        if (comp.includes(to)) console.error(`  ${from} → ${to}   (first seen in ${file})`);
      }
    }
  }
}
if (failed) process.exit(1);
console.log("no module cycles");
