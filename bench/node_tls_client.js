// The Node side of bench/tls_overhead.py --client node: timed TLS writes into bench/tls_sink from
// Node's own OpenSSL (linked into the node binary), printing {"size": ns per write} like
// tls_client.py. Each write is handed to OpenSSL at once (TLSWrap encrypts on write), so the
// time to the last write's callback over the number of writes is the per-call cost.
const tls = require("tls");
const port = Number(process.argv[2]);
const plan = [[100, 100000], [16384, 10000]];

function measure(size, calls) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, async () => {
      const payload = Buffer.alloc(size, "x");
      const write = () => new Promise((done) => (socket.write(payload) ? done() : socket.once("drain", done)));
      for (let i = 0; i < 200; i++) await write(); // warm-up, and time for the sensor's verdict
      await new Promise((r) => setTimeout(r, 200));
      const start = process.hrtime.bigint();
      for (let i = 0; i < calls; i++) await write();
      await new Promise((done) => socket.write(Buffer.alloc(0), done));
      const elapsed = Number(process.hrtime.bigint() - start);
      socket.destroy();
      resolve(elapsed / calls);
    });
    socket.on("error", reject);
  });
}

(async () => {
  const out = {};
  for (const [size, calls] of plan) out[String(size)] = await measure(size, calls);
  console.log(JSON.stringify(out));
})();
