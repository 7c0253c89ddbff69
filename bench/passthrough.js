// The baseline for bench/bench.mjs: the least a Worker can do to relay a request. It forwards the
// method, path, body and two headers to env.UPSTREAM_URL and returns the upstream's response as is.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const headers = new Headers();
    for (const h of ["content-type", "authorization"]) {
      const v = request.headers.get(h);
      if (v !== null) headers.set(h, v);
    }
    return fetch(env.UPSTREAM_URL + url.pathname + url.search, {
      method: request.method,
      headers,
      body: request.method === "GET" || request.method === "HEAD" ? undefined : request.body,
    });
  },
};
