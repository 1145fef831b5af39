#!/usr/bin/env node
// A minimal Node.js client for recsys.v1.Recommender, and an example for Node users.
// The .proto is loaded at run time, so new rpcs and fields work without regenerating code.
//
//   node recsys_client.js <address> <method> '<json request>'
//   node recsys_client.js 127.0.0.1:50051 Recommend '{"user_id": "196", "k": 5}'
//
// Prints the response as JSON. On a gRPC error prints "<STATUS_NAME>: <message>" to stderr
// and exits 1; on bad usage exits 2.
//
// A server with serving.tokens_file wants a bearer token: RECSYS_TOKEN=<token>. A server
// with TLS wants RECSYS_TLS_CA=<CA certificate file> (PEM), and with mutual TLS also
// RECSYS_TLS_CERT and RECSYS_TLS_KEY (the client's certificate and key).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO =
  process.env.RECSYS_PROTO ||
  path.join(__dirname, "..", "..", "protos", "recsys", "v1", "recommender.proto");
const SERVICE = "recsys.v1.Recommender";
const DEADLINE_MS = 10_000;

// Field names as written in the .proto (user_id, not userId); 64-bit ints as strings so
// no precision is lost; unset fields present with their default (0, "", []).
const LOADER_OPTIONS = { keepCase: true, longs: String, defaults: true };

/** The Recommender service definition from the .proto: method name -> method definition. */
function loadService(protoPath = PROTO) {
  const definition = protoLoader.loadSync(protoPath, LOADER_OPTIONS);
  return definition[SERVICE];
}

/**
 * Channel credentials: TLS when `ca` (a PEM file) is given, with the client's own
 * certificate for mutual TLS when `cert` and `key` are too; plaintext otherwise (then a
 * token crosses the network in clear: use TLS anywhere but loopback).
 */
function channelCredentials({ ca, cert, key } = {}) {
  if (!ca) {
    if (cert || key) throw new Error("a client certificate needs RECSYS_TLS_CA too");
    return grpc.credentials.createInsecure();
  }
  if (Boolean(cert) !== Boolean(key)) throw new Error("RECSYS_TLS_CERT and RECSYS_TLS_KEY go together");
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(ca), read(key), read(cert));
}

/**
 * A client stub for `address` ("host:port"); `options`: { token, ca, cert, key }. The token
 * goes on every call as "authorization: Bearer <token>" (see `call`).
 */
function createClient(address, protoPath = PROTO, options = {}) {
  const Recommender = grpc.makeGenericClientConstructor(loadService(protoPath), "Recommender");
  const client = new Recommender(address, channelCredentials(options));
  client.recsysToken = options.token || "";
  return client;
}

/** Calls `method` ("Recommend", "Rank", ...) with a plain-object request; resolves to the response. */
function call(client, method, request) {
  const service = client.constructor.service; // set by makeGenericClientConstructor
  const definition = service[method];
  if (definition === undefined) {
    const known = Object.keys(service).join(", ");
    return Promise.reject(new Error(`unknown method ${method}; the service has ${known}`));
  }
  // protobufjs silently drops unknown keys: a misspelt field would go unnoticed
  const fields = definition.requestType.type.field.map((field) => field.name);
  const unknown = Object.keys(request).filter((key) => !fields.includes(key));
  if (unknown.length > 0) {
    return Promise.reject(new Error(`unknown field(s) ${unknown.join(", ")} in ${method} request`));
  }
  const deadline = new Date(Date.now() + DEADLINE_MS);
  const metadata = new grpc.Metadata();
  if (client.recsysToken) metadata.set("authorization", `Bearer ${client.recsysToken}`);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

async function main(argv) {
  if (argv.length !== 3) {
    console.error("usage: node recsys_client.js <address> <method> '<json request>'");
    return 2;
  }
  const [address, method, json] = argv;
  let request;
  try {
    request = JSON.parse(json);
  } catch (err) {
    console.error(`request is not valid JSON: ${err.message}`);
    return 2;
  }
  let client;
  try {
    client = createClient(address, PROTO, {
      token: process.env.RECSYS_TOKEN,
      ca: process.env.RECSYS_TLS_CA,
      cert: process.env.RECSYS_TLS_CERT,
      key: process.env.RECSYS_TLS_KEY,
    });
  } catch (err) {
    console.error(`client setup: ${err.message}`);
    return 2;
  }
  try {
    const response = await call(client, method, request);
    console.log(JSON.stringify(response, null, 2));
    return 0;
  } catch (err) {
    // grpc.status maps the numeric code back to its name, e.g. 5 -> "NOT_FOUND"
    const name = err.code === undefined ? "CLIENT_ERROR" : grpc.status[err.code];
    console.error(`${name}: ${err.details || err.message}`);
    return err.code === undefined ? 2 : 1;
  } finally {
    client.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

module.exports = { LOADER_OPTIONS, channelCredentials, createClient, call, loadService };
