// A stock @grpc/grpc-js client against tokend, driven by tests/interop.rs.
//
//   node get_headers.js SOCKET CREDENTIAL
//
// Loads the repo's proto/tokend/v1/tokend.proto with @grpc/proto-loader,
// connects with the default target `unix:///abs/path` and no options, calls
// TokenBroker/GetHeaders and prints one JSON object: {"response": {...}} or,
// when the call fails, {"code": "PERMISSION_DENIED", "details": "..."}.
// Exits non-zero (reason on stderr) only when it cannot make the call.

"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [socket, credential] = process.argv.slice(2);
if (!socket || !path.isAbsolute(socket) || !credential) {
  console.error("usage: node get_headers.js /abs/path/tokend.sock CREDENTIAL");
  process.exit(2);
}

const definition = protoLoader.loadSync("tokend/v1/tokend.proto", {
  includeDirs: [path.join(__dirname, "../../../proto")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const { tokend } = grpc.loadPackageDefinition(definition);

const broker = new tokend.v1.TokenBroker(
  `unix://${socket}`,
  grpc.credentials.createInsecure(),
);
broker.GetHeaders(
  { credential },
  { deadline: Date.now() + 10_000 },
  (err, response) => {
    if (err) {
      const code = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code);
      console.log(JSON.stringify({ code, details: err.details }));
    } else {
      console.log(JSON.stringify({ response }));
    }
    broker.close();
  },
);
