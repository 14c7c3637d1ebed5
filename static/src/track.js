// One event, from comet('track', ...), a page view or a captured pixel call: counted once per
// event id, carrying the visit, queued for the network, and mirrored to the Meta pixel.
import { defaultCurrency, pixelMirroring } from './config.js';
import { toHex } from './fingerprint.js';
import { queueEvent } from './network.js';
import { mirrorToPixel } from './pixel.js';
import { visit } from './visit.js';

let seenIds; // every event id seen on this page: the pixel and the page may both report one

export function startTracking() {
  seenIds = new Set();
}

// quiet: a page view or a captured pixel call, never mirrored to the pixel.
export function track(name, props, quiet) {
  props = Object.assign({}, props);
  const eventId = '' + (props.event_id || randomId());
  if (seenIds.has(eventId)) return;
  seenIds.add(eventId);
  const currency = props.currency || defaultCurrency; // for Meta: no Create Event field
  delete props.currency;

  const url = new URL(location.href);
  const event = { event_name: name, event_id: eventId };
  // fbclid and gclid are not Create Event fields: they travel as query parameters of `url`,
  // added back when the current page's URL has lost them.
  for (const field in visit) {
    if (field.endsWith('clid')) url.searchParams.has(field) || url.searchParams.set(field, visit[field]);
    else event[field] = visit[field];
  }
  event.url = url.href;
  // (ip, user_agent, comet_token and idempotency_key are the relay's own: it drops them)
  Object.assign(event, props);
  if (navigator.globalPrivacyControl === true) event.do_not_capi = true;
  queueEvent(event);

  if (!quiet && pixelMirroring) mirrorToPixel(name, eventId, event.amount, currency);
}

function randomId() {
  // randomUUID: secure contexts only; getRandomValues: everywhere
  return crypto.randomUUID ? crypto.randomUUID() : toHex(crypto.getRandomValues(new Uint8Array(16)));
}
