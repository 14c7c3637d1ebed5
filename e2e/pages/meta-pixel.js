// Meta's pixel base code, written out readably: metaPixel() makes the stub `fbq` that queues
// calls until fbevents.js installs `fbq.callMethod` on the same object, then loads fbevents.js
// (here the local fake beside this file). Like the original, it sets window.fbq before the
// stub's queue exists.
function metaPixel() {
  if (window.fbq) return;
  var fbq = function () {
    fbq.callMethod ? fbq.callMethod.apply(fbq, arguments) : fbq.queue.push(arguments);
  };
  window.fbq = fbq;
  if (!window._fbq) window._fbq = fbq;
  fbq.push = fbq;
  fbq.loaded = true;
  fbq.version = '2.0';
  fbq.queue = [];
  var script = document.createElement('script');
  script.async = true;
  script.src = '/fbevents.js';
  var first = document.getElementsByTagName('script')[0];
  first.parentNode.insertBefore(script, first);
}

// The page's own pixel calls: init, PageView and, with ?eid=ID, a Purchase of 49 EUR.
function pixelCalls() {
  fbq('init', '1234567890');
  fbq('track', 'PageView');
  var eid = new URLSearchParams(location.search).get('eid');
  if (eid) fbq('track', 'Purchase', { value: 49, currency: 'EUR' }, { eventID: eid });
}
