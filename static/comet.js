/* comet.js: the comet-relay browser snippet. This is the readable source; the relay serves
 * comet.min.js, made from it by scripts/build-snippet.
 *
 *   <script>window.comet=window.comet||function(){(comet.q=comet.q||[]).push(arguments)};</script>
 *   <script async src="https://YOUR-RELAY/comet.js" data-key="pk_acme"></script>
 *
 * API: comet('track', name, props), comet('identify', {email, ...}), comet('page'),
 * comet('consent', true|false). Options: data-endpoint, data-consent="required",
 * data-pageview (event name, or "off"), data-mirror-fbq="false",
 * data-fbq-custom="MetaEvent:custom_event_N,...".
 *
 * Never throw into the host page: the start is one try block, and everything the browser or
 * the page calls back later catches, or ends its promise chain in a handler. Never block it:
 * async, the fingerprint in idle time, no synchronous requests. Automated browsers are treated
 * like any other.
 */
(function (w, d, nav, loc) {
  'use strict';
  if (w.comet && w.comet.loaded) return; // the tag was pasted twice

  try {
    var script = d.currentScript || d.querySelector('script[data-key]');
    var attr = (name) => script.getAttribute('data-' + name);
    var P = 'comet_';
    var WEEK = 604800;
    var now = () => Math.round(Date.now() / 1e3);
    var T = Symbol(); // when an event was made; JSON.stringify skips symbol keys
    var out = []; // events not yet handed to the network
    var ids = new Set(); // every event id seen on this page: each is counted once
    var pageview = attr('pageview') || 'view_content';
    var mirror = attr('mirror-fbq') != 'false';
    var ok = attr('consent') != 'required' || get('consent', 1);
    var lastUrl, fingerprint, busy, k;

    // The collect URL: data-endpoint (resolved against the page, like a link on it), else "e"
    // beside the script itself, so /relay/comet.js posts to /relay/e on the relay's origin.
    var endpoint = new URL(attr('endpoint') || 'e', attr('endpoint') ? d.baseURI : script.src);
    endpoint.searchParams.set('k', attr('key'));

    // Meta standard events <-> event names: all but Lead are the Meta name in snake_case.
    var toName = { Lead: 'lead_generated' };
    var toMeta = { lead_generated: 'Lead' };
    'ViewContent Purchase Subscribe AddToCart Contact InitiateCheckout AddPaymentInfo CompleteRegistration StartTrial SubmitApplication Schedule'
      .split(' ')
      .forEach((meta) => {
        var name = meta.replace(/\B[A-Z]/g, '_$&').toLowerCase();
        toName[meta] = name;
        toMeta[name] = meta;
      });
    // data-fbq-custom="MyEvent:custom_event_3": pixel events the Space maps (capture only)
    var custom = {};
    (attr('fbq-custom') || '').split(',').forEach((pair) => {
      pair = pair.split(':');
      if (pair[1]) custom[pair[0].trim()] = pair[1].trim();
    });

    // --- the visit: user fields from identify, attribution and click ids from the landing URL,
    // kept in sessionStorage so a purchase three pages later still carries its campaign.
    var visit = get('v') || {};
    var query = new URL(loc.href).searchParams;
    var campaign = {};
    // comet_X fields and the utm_ parameter each falls back to; an explicit comet_X wins, and no
    // other comet_* name is taken from a URL
    var fields = {
      source: 'source', network: 0, campaign: 'campaign', ad_group: 0, ad_id: 'content',
      keyword: 'term', type: 'medium',
    };
    for (k in fields) {
      var value = query.get(P + k) || (fields[k] && query.get('utm_' + fields[k]));
      if (value) campaign[P + k] = value;
    }
    if (Object.keys(campaign).length) {
      // a new campaign replaces the old one whole rather than mixing with it
      for (k in visit) if (k.startsWith(P)) delete visit[k];
      Object.assign(visit, campaign);
    }
    ['fbclid', 'gclid'].forEach((name) => {
      if (query.get(name)) visit[name] = query.get(name);
    });
    put('v', visit);

    // --- fingerprint: stable browser signals, never the IP, hashed in idle time. Events wait
    // for it at most 800 ms, then go without it.
    var ready = new Promise((resolve) => {
      setTimeout(resolve, 800);
      // (as a setTimeout delay, requestIdleCallback's options object counts as 0)
      (w.requestIdleCallback || setTimeout)(() => {
        try {
          var canvas = d.createElement('canvas');
          var ctx = canvas.getContext('2d');
          ctx.font = '15px serif';
          ctx.fillText('comet \u{1F680} relay', 2, 16); // rendering differs by OS, fonts, GPU
          var s = screen;
          var signals = [nav.userAgent, nav.languages, nav.platform, nav.hardwareConcurrency,
            nav.deviceMemory, s.width, s.height, s.colorDepth,
            Intl.DateTimeFormat().resolvedOptions().timeZone, canvas.toDataURL()].join('|');
          var subtle = crypto.subtle; // only in secure contexts
          (subtle
            ? subtle.digest('SHA-256', new TextEncoder().encode(signals)).then(hex)
            : Promise.resolve(hash53(signals))
          ).then((h) => resolve((fingerprint = h)), resolve);
        } catch (e) {
          resolve();
        }
      }, { timeout: 300 });
    });

    // --- start
    var queued = (w.comet && w.comet.q) || [];
    comet.loaded = true;
    w.comet = comet;
    // events whose sending failed on an earlier page go again, with their original event_time
    var stored = get('q', 1);
    put('q', null, 1);
    out = [].concat(stored || []).filter(fresh);
    if (mirror) hookPixel();
    queued.forEach((args) => comet.apply(0, args));
    autoPage();
    later();

    // single-page apps: a page view per new URL (and never the same URL twice in a row)
    ['pushState', 'replaceState'].forEach((method) => {
      var original = history[method];
      history[method] = function () {
        var result = original.apply(this, arguments);
        autoPage();
        return result;
      };
    });
    w.addEventListener('popstate', autoPage);
    var hide = () => flush(1);
    d.addEventListener('visibilitychange', () => d.visibilityState == 'hidden' && hide());
    w.addEventListener('pagehide', hide);
  } catch (e) {}

  // --- storage may be missing or throw (privacy modes, sandboxed frames); nothing is written
  // without consent where consent is required. l = 1: localStorage, else sessionStorage.
  function get(key, l) {
    try {
      return JSON.parse(w[l ? 'localStorage' : 'sessionStorage'].getItem(P + key));
    } catch (e) {}
  }
  function put(key, value, l) {
    try {
      var store = w[l ? 'localStorage' : 'sessionStorage'];
      value == null ? store.removeItem(P + key) : ok && store.setItem(P + key, JSON.stringify(value));
    } catch (e) {}
  }

  // Fallback hash where SubtleCrypto is missing: FNV-1a (32 bits) beside djb2-xor (21 bits).
  function hash53(s) {
    for (var i = 0, a = 2166136261, b = 5381; i < s.length; i++) {
      a = Math.imul(a ^ s.charCodeAt(i), 16777619);
      b = Math.imul(b, 33) ^ s.charCodeAt(i);
    }
    return ((b & 0x1fffff) * 4294967296 + (a >>> 0)).toString(16);
  }

  function hex(bytes) {
    return [...new Uint8Array(bytes)].map((b) => (b + 256).toString(16).slice(1)).join('');
  }

  function uuid() {
    // randomUUID: secure contexts only; getRandomValues: everywhere
    return crypto.randomUUID ? crypto.randomUUID() : hex(crypto.getRandomValues(new Uint8Array(16)));
  }

  function fresh(event) {
    return event && event.event_time > now() - WEEK;
  }

  // --- events. quiet: a page view or a captured pixel call, never mirrored to the pixel.
  function track(name, props, quiet) {
    props = Object.assign({}, props);
    var id = '' + (props.event_id || uuid());
    if (ids.has(id)) return; // the pixel and the page may both report one conversion
    ids.add(id);
    var currency = props.currency; // Meta's parameter, not a Create Event field
    delete props.currency;
    var url = new URL(loc.href);
    var event = { event_name: name, event_id: id };
    // fbclid and gclid are not Create Event fields: they travel as query parameters of `url`,
    // added back when the current page's URL has lost them.
    for (var key in visit) {
      if (key.endsWith('clid')) url.searchParams.has(key) || url.searchParams.set(key, visit[key]);
      else event[key] = visit[key];
    }
    event.url = url.href;
    // only the relay sets these; it would drop them anyway
    for (key in props) if (!/^(ip|user_agent|comet_token|idempotency_key)$/.test(key)) event[key] = props[key];
    if (nav.globalPrivacyControl === true) event.do_not_capi = true;
    event[T] = now();
    out.push(event);
    later();

    var meta = !quiet && mirror && typeof w.fbq == 'function' && toMeta[name];
    if (meta) {
      var params = {};
      if (event.amount != null) params.value = event.amount;
      if (currency) params.currency = currency;
      w.fbq('track', meta, params, { eventID: id }); // its id is in `ids`: not captured again
    }
  }

  // events made in one task go in one batch, once the fingerprint is there (or late)
  function later() {
    ready.then(() => flush());
  }

  // Hand the waiting events to the network: one fetch at a time, so that a visitor's first
  // answer has set the relay's cookie before the next batch goes (else the two batches would get
  // two visitor tokens). While the page is being hidden everything goes at once, by sendBeacon
  // (a beacon outlives the page). Without consent, where it is required, events wait in memory.
  function flush(hiding) {
    try {
      while (ok && out.length && (hiding || !busy)) {
        var batch = out.splice(0, 20);
        batch.forEach((event) => (event.fingerprint = event.fingerprint || fingerprint));
        var body = JSON.stringify({ e: batch });
        if (!(hiding && nav.sendBeacon && nav.sendBeacon(endpoint, new Blob([body], { type: 'text/plain' })))) send(batch, body);
      }
    } catch (e) {}
  }

  function send(batch, body) {
    var done = () => {
      busy = 0;
      flush();
    };
    // text/plain: no CORS preflight; credentials: the relay's first-party visitor cookie
    fetch(endpoint, { method: 'POST', body, keepalive: true, credentials: 'include' })
      .then(
        (res) => {
          // below 500 the relay has decided: the copy is dropped
          if (res.status > 499) return keep(batch);
          res.json().then(
            (answer) => answer.refused && answer.refused[0] && console.warn('comet: refused', answer.refused),
            () => 0
          );
        },
        () => keep(batch)
      )
      .then(done, done);
    busy = 1; // after fetch(), which would leave it set if it threw
  }

  // Network errors and 5xx: kept in localStorage (100 events, 7 days at most) for a later page.
  function keep(batch) {
    batch.forEach((event) => (event.event_time = event.event_time || event[T]));
    put('q', [].concat(get('q', 1) || [], batch).filter(fresh).slice(-100), 1);
  }

  function page() {
    if (loc.href != lastUrl) {
      lastUrl = loc.href;
      track(pageview == 'off' ? 'view_content' : pageview, {}, 1);
    }
  }

  function autoPage() {
    try {
      if (pageview != 'off') page();
    } catch (e) {}
  }

  function consent(given) {
    ok = given;
    if (given) {
      put('consent', 1, 1);
      put('v', visit);
      later();
    } else {
      // withdrawn: forget what waits and what is stored
      out = [];
      put('consent', null, 1);
      put('q', null, 1);
      put('v');
    }
  }

  function comet(command, a, b) {
    try {
      if (command == 'track') track(a, b);
      // only the user fields, as strings: anything else would get every later event refused
      if (command == 'identify') {
        'email phone first_name last_name full_name'.split(' ').forEach((field) => {
          if (a[field] != null) visit[field] = '' + a[field];
        });
        put('v', visit);
      }
      if (command == 'page') page();
      if (command == 'consent') consent(a);
    } catch (e) {}
  }

  // --- Meta pixel. Observe the pixel's own object and never replace window.fbq: fbevents.js
  // takes over by installing fbq.callMethod on the stub that Meta's base code made.
  // Only calls with an eventID are captured: without one Meta cannot match the relay's copy to
  // the pixel's and would count the conversion twice. PageView is never mapped (the snippet
  // counts page views itself); trackCustom and other events only through data-fbq-custom.
  function seen(args) {
    try {
      args = [].slice.call(args);
      var command = args[0].replace('Single', ''); // trackSingle(pixelId, event, ...)
      if (command != args[0]) args.splice(1, 1);
      var params = args[2] || {};
      var id = (args[3] || {}).eventID;
      var name = command.startsWith('track') && ((command == 'track' && toName[args[1]]) || custom[args[1]]);
      var amount = parseFloat(params.value);
      if (name && id) track(name, { event_id: id, amount: isNaN(amount) ? void 0 : amount }, 1);
    } catch (e) {}
  }

  function watch(fbq) {
    var queue = fbq.queue;
    var method = fbq.callMethod;
    var observed = function () {
      seen(arguments);
      return method.apply(this, arguments);
    };
    // before fbevents.js: calls land in fbq.queue, some of them before this script ran
    if (queue && queue.push) {
      [].forEach.call(queue, seen);
      var push = queue.push;
      queue.push = function () {
        [].forEach.call(arguments, seen);
        return push.apply(this, arguments);
      };
    }
    // after: fbevents.js assigns fbq.callMethod. Keep what it assigns and observe the calls;
    // the getter answers undefined until then, so the stub goes on queueing.
    Object.defineProperty(fbq, 'callMethod', {
      configurable: true,
      get: () => method && observed,
      set: (fn) => (method = fn),
    });
  }

  function hookPixel() {
    if (w.fbq) return watch(w.fbq);
    // A tag manager may add the pixel later. Catch the base code's `window.fbq = ...` once, make
    // window.fbq a plain property again, and start watching when that script has queued its
    // first calls (a microtask: before fbevents.js can run).
    Object.defineProperty(w, 'fbq', {
      configurable: true,
      set: (fbq) => {
        delete w.fbq;
        w.fbq = fbq;
        Promise.resolve(fbq).then(watch).catch(() => 0);
      },
    });
  }
})(window, document, navigator, location);
