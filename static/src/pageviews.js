// Page views: one on load, and one for each new page of a single-page app, unless
// data-pageview="off". What a person would call a new page:
//
// - a new path or query; the hash only when it is a route (#/... or #!/...), so an in-page
//   anchor is none, and a bare #/ is the same page as no hash (a hash router's start-up
//   rewrite of the landing URL to /?utm...#/ is no second view);
// - pushState and popstate (links, back and forward) count at once;
// - replaceState rewrites the URL of the page being viewed: within a second of the last page
//   view it is that same view (a router's start-up rewrite or redirect); later, it counts once
//   the URL has been quiet for a second (search-as-you-type mirrored to ?q= makes one view).
import { pageviewName } from './config.js';
import { track } from './track.js';

const QUIET_MS = 1000;

let lastPage;
let lastViewAt;
let quietTimer;

function currentPage() {
  return location.pathname + location.search + (/^#!?\/./.test(location.hash) ? location.hash : '');
}

// comet('page'), also with automatic page views off
export function trackPageview() {
  if (currentPage() != lastPage) {
    lastPage = currentPage();
    lastViewAt = Date.now();
    track(pageviewName == 'off' ? 'view_content' : pageviewName, {}, true);
  }
}

export function trackPageviewAutomatically() {
  try {
    if (pageviewName != 'off') trackPageview();
  } catch (e) {}
}

function rewritten() {
  clearTimeout(quietTimer);
  if (Date.now() - lastViewAt < QUIET_MS) lastPage = currentPage();
  else quietTimer = setTimeout(trackPageviewAutomatically, QUIET_MS);
}

export function followNavigation() {
  [
    ['pushState', trackPageviewAutomatically],
    ['replaceState', rewritten],
  ].forEach(([method, after]) => {
    const original = history[method];
    history[method] = function () {
      const result = original.apply(this, arguments);
      try {
        after();
      } catch (e) {}
      return result;
    };
  });
  window.addEventListener('popstate', trackPageviewAutomatically);
}
