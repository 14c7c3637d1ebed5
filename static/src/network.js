// Getting events to the relay: batches of the events made in one task, posted one fetch at a
// time, by sendBeacon while the page is being hidden, and kept for a later page when the
// network or the relay fails.
import { endpoint } from './config.js';
import { consented } from './consent.js';
import { fingerprint, fingerprintReady } from './fingerprint.js';
import { PERSISTENT, readStored, writeStored } from './storage.js';

const BATCH_SIZE = 20;
const KEPT_AT_MOST = 100;
const KEPT_SECONDS = 7 * 24 * 3600;
const now = () => Math.round(Date.now() / 1e3); // seconds, as event_time

let waiting; // events not yet handed to the network
let sending; // a fetch is on its way
let madeAt; // symbol key: when an event was made (JSON.stringify skips symbol keys)

// Events whose sending failed on an earlier page go again, with their original event_time.
export function startNetwork() {
  madeAt = Symbol();
  const kept = readStored('q', PERSISTENT);
  writeStored('q', null, PERSISTENT);
  waiting = [].concat(kept || []).filter(fresh);
}

export function queueEvent(event) {
  event[madeAt] = now();
  waiting.push(event);
  sendSoon();
}

// Events made in one task go in one batch, once the fingerprint is there (or late).
export function sendSoon() {
  fingerprintReady.then(() => flush());
}

export function discardWaiting() {
  waiting = [];
}

// A beacon outlives the page: while it is being hidden, everything waiting goes at once.
export function sendAllWhenHidden() {
  const hiding = () => flush(true);
  document.addEventListener('visibilitychange', () => document.visibilityState == 'hidden' && hiding());
  window.addEventListener('pagehide', hiding);
}

// Hand the waiting events to the network: one fetch at a time, so that a visitor's first
// answer has set the relay's cookie before the next batch goes (else the two batches would
// get two visitor tokens). Without consent, where it is required, events wait in memory.
function flush(hiding) {
  try {
    while (consented && waiting.length && (hiding || !sending)) {
      const batch = waiting.splice(0, BATCH_SIZE);
      batch.forEach((event) => (event.fingerprint = event.fingerprint || fingerprint));
      const body = JSON.stringify({ e: batch });
      // a string goes as text/plain, like the fetch
      const beaconed = hiding && navigator.sendBeacon && navigator.sendBeacon(endpoint, body);
      if (!beaconed) post(batch, body);
    }
  } catch (e) {}
}

function post(batch, body) {
  const done = () => {
    sending = false;
    flush();
  };
  // text/plain: no CORS preflight; credentials: the relay's first-party visitor cookie
  fetch(endpoint, { method: 'POST', body, keepalive: true, credentials: 'include' })
    .then(
      (response) => {
        // below 500 the relay has decided: the copy is dropped
        if (response.status > 499) return keep(batch);
        response.json().then(
          (answer) =>
            answer.refused && answer.refused[0] && console.warn('comet: refused', answer.refused),
          () => 0
        );
      },
      () => keep(batch)
    )
    .then(done, done);
  sending = true; // after fetch(), which would leave it set if it threw
}

// Network errors and 5xx: kept in localStorage (at most 100 events, 7 days) for a later page.
function keep(batch) {
  batch.forEach((event) => (event.event_time = event.event_time || event[madeAt]));
  writeStored(
    'q',
    [].concat(readStored('q', PERSISTENT) || [], batch).filter(fresh).slice(-KEPT_AT_MOST),
    PERSISTENT
  );
}

function fresh(event) {
  return event && event.event_time > now() - KEPT_SECONDS;
}
