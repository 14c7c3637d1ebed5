// The Meta pixel, both ways: comet('track', ...) calls are mirrored to it with the same event
// id, and its own calls that carry an eventID are captured as relay events. Meta drops a
// server event whose name and id match a pixel event, so each conversion counts once.
//
// Capturing is the stub line's part (static/comet-stub.js, the tag's first line, before the
// pixel's base code): fbevents.js may load and drain the pixel's queue before this script
// runs, so only a line that runs first sees every call. It observes the pixel's own object and
// never replaces window.fbq, and hands each call to comet('fbq', args), queued until this
// script runs. Only calls with an eventID are captured: without one Meta could not match the
// relay's copy to the pixel's and would count the conversion twice. PageView is never mapped
// (the snippet counts page views itself); trackCustom and other events only through
// data-fbq-custom. A call seen twice (queued, then drained) is one event (one id, track.js).
import { customPixelEvents } from './config.js';

let metaToName; // Meta standard event -> event name
let nameToMeta;
let record; // record(name, props): a captured pixel event becomes a relay event

// record is passed in rather than imported: track.js mirrors to the pixel, and importing it
// here would make an import cycle.
export function startPixel(recordEvent) {
  record = recordEvent;
  // All but Lead are the Meta name in snake_case.
  metaToName = { Lead: 'lead_generated' };
  nameToMeta = { lead_generated: 'Lead' };
  'ViewContent Purchase Subscribe AddToCart Contact InitiateCheckout AddPaymentInfo CompleteRegistration StartTrial SubmitApplication Schedule'
    .split(' ')
    .forEach((meta) => {
      const name = meta.replace(/\B[A-Z]/g, '_$&').toLowerCase();
      metaToName[meta] = name;
      nameToMeta[name] = meta;
    });
}

// comet('track', name, ...) with this event's id: the id is already known to track.js, so
// the pixel's call is not captured back. Meta expects the currency with the value.
export function mirrorToPixel(name, eventId, amount, currency) {
  const meta = typeof window.fbq == 'function' && nameToMeta[name];
  if (meta) {
    const params = {};
    if (amount != null) params.value = amount;
    if (currency) params.currency = currency;
    window.fbq('track', meta, params, { eventID: eventId });
  }
}

// comet('fbq', args), args those of one pixel call (an array, an arguments object, or from a
// Partytown worker an object of them by index): fbq('track', 'Purchase', {value: 49},
// {eventID: 'X'}), or the trackSingle(pixelId, ...) and trackCustom forms. Ignored when
// data-mirror-fbq="false" (startPixel did not run).
export function pixelCalled(args) {
  try {
    args = Object.values(args);
    const command = args[0].replace('Single', '');
    if (command != args[0]) args.splice(1, 1);
    const params = args[2] || {};
    const eventId = (args[3] || {}).eventID;
    const name =
      command.startsWith('track') &&
      ((command == 'track' && metaToName[args[1]]) || customPixelEvents[args[1]]);
    const amount = parseFloat(params.value);
    if (name && eventId) record(name, { event_id: eventId, amount: isNaN(amount) ? void 0 : amount });
  } catch (e) {}
}
