// Copies the repository's API definition into this package (proto/), where
// the client loads it at run time. Run by `npm run build` (and so by `npm
// pack`): the copy is made from ../../proto on every build and never checked
// in, so it cannot drift from the daemon's. In an unpacked tarball, where
// ../../proto does not exist, the shipped copy is kept.

"use strict";

const fs = require("node:fs");
const path = require("node:path");

const FILE = path.join("tokend", "v1", "tokend.proto");
const source = path.join(__dirname, "..", "..", "..", "proto", FILE);
const target = path.join(__dirname, "..", "proto", FILE);

if (fs.existsSync(source)) {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.copyFileSync(source, target);
} else if (!fs.existsSync(target)) {
  console.error(
    `copy-proto: neither ${source} (the repository's API) nor ${target} exists; ` +
      "build this package from a checkout of the tokend repository",
  );
  process.exit(1);
}
