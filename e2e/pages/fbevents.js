// A stand-in for Meta's fbevents.js: it takes over the base code's stub as the real one does,
// by installing fbq.callMethod on that same object and draining fbq.queue through it. Every
// call it receives is recorded in window.__pixelCalls for the tests.
(function () {
  var fbq = window.fbq;
  if (!fbq || fbq.callMethod) return;
  var calls = (window.__pixelCalls = []);
  fbq.callMethod = function () {
    calls.push(JSON.parse(JSON.stringify([].slice.call(arguments))));
  };
  var queue = fbq.queue;
  while (queue.length) fbq.callMethod.apply(fbq, queue.shift());
})();
