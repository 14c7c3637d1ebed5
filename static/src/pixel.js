// The Meta pixel, both ways: comet('track', ...) calls are mirrored to it with the same event
// id, and its own calls that carry an eventID are captured as relay events. Meta drops a
// server event whose name and id match a pixel event, so each conversion counts once.
//
// The snippet observes the pixel's own object and never replaces window.fbq: fbevents.js takes
// over by installing fbq.callMethod on the stub that Meta's base code made. Only calls with an
// eventID are captured: without one Meta could not match the relay's copy to the pixel's and
// would count the conversion twice. PageView is never mapped (the snippet counts page views
// itself); trackCustom and other events only through data-fbq-custom.
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

  if (window.fbq) return watch(window.fbq);
  // A tag manager may add the pixel later. Catch the base code's `window.fbq = ...` once, make
  // window.fbq a plain property again, and start watching when that script has queued its
  // first calls (a microtask: before fbevents.js can run).
  Object.defineProperty(window, 'fbq', {
    configurable: true,
    set: (fbq) => {
      delete window.fbq;
      window.fbq = fbq;
      Promise.resolve(fbq).then(watch).catch(() => 0);
    },
  });
}

// comet('track', name, ...) with this event's id: the id is already known to track.js, so
// the pixel's call is not captured back.
export function mirrorToPixel(name, eventId, amount, currency) {
  const meta = typeof window.fbq == 'function' && nameToMeta[name];
  if (meta) {
    const params = {};
    if (amount != null) params.value = amount;
    if (currency) params.currency = currency;
    window.fbq('track', meta, params, { eventID: eventId });
  }
}

function watch(fbq) {
  const queue = fbq.queue;
  let callMethod = fbq.callMethod;
  const observed = function () {
    pixelCalled(arguments);
    return callMethod.apply(this, arguments);
  };
  // before fbevents.js: calls land in fbq.queue, some of them before this script ran
  if (queue && queue.push) {
    [].forEach.call(queue, pixelCalled);
    const push = queue.push;
    queue.push = function () {
      [].forEach.call(arguments, pixelCalled);
      return push.apply(this, arguments);
    };
  }
  // after: fbevents.js assigns fbq.callMethod. Keep what it assigns and observe the calls; the
  // getter answers undefined until then, so the stub goes on queueing.
  Object.defineProperty(fbq, 'callMethod', {
    configurable: true,
    get: () => callMethod && observed,
    set: (assigned) => (callMethod = assigned),
  });
}

// One pixel call: fbq('track', 'Purchase', {value: 49}, {eventID: 'X'}), or the
// trackSingle(pixelId, ...) and trackCustom forms.
function pixelCalled(args) {
  try {
    args = [].slice.call(args);
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
