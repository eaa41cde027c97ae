// Agent: Node.js global fetch. Node 20's fetch ignores proxy variables, so the agent does
// what a real one must: install undici's EnvHttpProxyAgent (HTTP_PROXY/NO_PROXY) globally.
// argv: <dir holding node_modules/undici> URL... ; prints one JSON list of results.
"use strict";
const path = require("path");
const [undiciDir, ...urls] = process.argv.slice(2);
const { EnvHttpProxyAgent, setGlobalDispatcher } = require(
  path.join(undiciDir, "node_modules", "undici"));
setGlobalDispatcher(new EnvHttpProxyAgent());

async function call(url) {
  try {
    const resp = await fetch(url, { headers: { Authorization: "Bearer stolen" } });
    const text = await resp.text();
    let body;
    try { body = JSON.parse(text); } catch { body = text.slice(0, 200); }
    return { status: resp.status, body, proxy_error: resp.headers.get("x-openshell-proxy-error") };
  } catch (err) {
    return { status: null, error: String((err && err.cause) || err) };
  }
}

(async () => {
  const out = [];
  for (const url of urls) out.push(await call(url));
  console.log(JSON.stringify(out));
})();
