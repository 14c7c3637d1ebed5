// Page views: one on load, and one per new URL of a single-page app (never the same URL twice
// in a row), unless data-pageview="off".
import { pageviewName } from './config.js';
import { track } from './track.js';

let lastUrl;

// comet('page'), also with automatic page views off
export function trackPageview() {
  if (location.href != lastUrl) {
    lastUrl = location.href;
    track(pageviewName == 'off' ? 'view_content' : pageviewName, {}, true);
  }
}

export function trackPageviewAutomatically() {
  try {
    if (pageviewName != 'off') trackPageview();
  } catch (e) {}
}

export function followNavigation() {
  ['pushState', 'replaceState'].forEach((method) => {
    const original = history[method];
    history[method] = function () {
      const result = original.apply(this, arguments);
      trackPageviewAutomatically();
      return result;
    };
  });
  window.addEventListener('popstate', trackPageviewAutomatically);
}
