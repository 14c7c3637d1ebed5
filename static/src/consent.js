// Whether this page may store and send events: always, unless data-consent="required"; then
// only once the visitor has consented (comet('consent', true), remembered in localStorage).
// Only the state lives here, so that storage and network can read it without an import cycle;
// the comet('consent', ...) command is in api.js.

export let consented;

export function setConsented(value) {
  consented = value;
}
