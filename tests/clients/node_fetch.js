// POST one recorded request with the runtime's own fetch (Node's undici, Bun's fetch): the TLS
// library is whatever the runtime carries. The test CA comes from NODE_EXTRA_CA_CERTS.
// Usage: node_fetch.js URL BODY_FILE FIXTURE [HEADER...]; prints {"status": n, "bytes": n}.
const fs = require("fs");
const [url, bodyFile, fixture, ...extra] = process.argv.slice(2);
const headers = { "content-type": "application/json", "x-fixture": fixture };
for (const header of extra) {
  const at = header.indexOf(":");
  headers[header.slice(0, at).trim().toLowerCase()] = header.slice(at + 1).trim();
}
fetch(url, { method: "POST", headers, body: fs.readFileSync(bodyFile) })
  .then(async (response) => {
    const text = await response.text();
    console.log(JSON.stringify({ status: response.status, bytes: text.length }));
  })
  .catch((err) => {
    console.error(String(err && err.cause ? err.cause : err));
    process.exit(1);
  });
