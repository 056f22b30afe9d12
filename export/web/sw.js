// facederm web: offline after the first visit. The page stores the model and the onnxruntime-web files it
// used in this cache; the worker serves them (cache first, the model network first) when offline. Navigations also
// get the cross-origin isolation headers, so threads work on static hosts that cannot send them.
const BUILD = "__FACEDERM_BUILD__";
const CACHE_NAME = `facederm-web-${BUILD}`;
const SHELL = ["./", "index.html", "app.js", "preprocess.js", "clinical.js", "manifest.webmanifest", "icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE_NAME).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith("facederm-web-") && key !== CACHE_NAME) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

function isolated(response) {
  if (!response || response.type === "opaque") return response;
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  const navigate = request.mode === "navigate";
  // Model files: the network first (a re-export with the same card must not run the old weights), the
  // cache when offline. Everything else is versioned by BUILD: the cache first.
  if (new URL(request.url).pathname.endsWith(".onnx")) {
    event.respondWith((async () => {
      const cache = await caches.open(CACHE_NAME);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(request, response.clone());
        return response;
      } catch (exc) {
        const cached = await cache.match(request);
        if (cached) return cached;
        throw exc;
      }
    })());
    return;
  }
  event.respondWith((async () => {
    const cache = await caches.open(CACHE_NAME);
    let response = await cache.match(request, { ignoreSearch: navigate });
    if (!response) {
      try {
        response = await fetch(request);
      } catch (exc) {
        response = navigate ? await cache.match("index.html") : undefined;
        if (!response) throw exc;
      }
    }
    return navigate ? isolated(response) : response;
  })());
});
