// A webhook receiver on 127.0.0.1 for budget notices and operator alerts: records every POST
// (headers, raw body, parsed JSON) and answers with the queued statuses, then 200.
//
//   const hook = await startWebhookListener([500]);   // first delivery fails, later ones succeed
//   const alert = await within(hook.find((x) => x.json.type === "…"), 10_000, "…");
//   await hook.count(2);                                 // resolves once two deliveries arrived
import http from "node:http";

export async function startWebhookListener(statuses = []) {
  const received = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      let json;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      received.push({ method: req.method, url: req.url, headers: req.headers, body, json });
      res.writeHead(statuses.shift() ?? 200, { "content-type": "text/plain" });
      res.end("ok");
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const until = (test) =>
    new Promise((resolve) => {
      const check = () => {
        const value = test();
        if (value !== undefined) resolve(value);
        else waiters.push(check);
      };
      check();
    });
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    received,
    /** Resolves with the first delivery matching pred (already received or future). */
    find: (pred) => until(() => received.find(pred)),
    /** Resolves with all deliveries once there are at least n. */
    count: (n) => until(() => (received.length >= n ? received : undefined)),
    close: () => new Promise((r) => server.close(r)),
  };
}
