// The snippet's options: the data-* attributes of its own <script> tag.
//
//   data-key         the Space's public key (required)
//   data-endpoint    where events are posted; default "e" beside the script itself
//   data-consent     "required": nothing is stored or sent before comet('consent', true)
//   data-pageview    the event name of automatic page views, or "off"
//   data-mirror-fbq  "false": comet('track', ...) calls are not also sent to the Meta pixel
//   data-fbq-custom  "MetaEvent:custom_event_N,...": pixel events to capture under Space names
//   data-currency    the currency of amounts, given to the Meta pixel with each value
//   data-forms       "off": submitted forms do not identify the visitor

export let script;
export let pageviewName;
export let pixelMirroring;
export let consentRequired;
export let endpoint;
export let customPixelEvents;
export let defaultCurrency;
export let formCapture;

const option = (name) => script.getAttribute('data-' + name);

// Throws when no tag is found: the snippet then stays inert.
export function readConfig() {
  script = document.currentScript || document.querySelector('script[data-key]');
  pageviewName = option('pageview') || 'view_content';
  pixelMirroring = option('mirror-fbq') != 'false';
  consentRequired = option('consent') == 'required';
  defaultCurrency = option('currency');
  formCapture = option('forms') != 'off';

  // data-endpoint resolves against the page, like a link on it; the default against the
  // script, so /relay/comet.js posts to /relay/e on the relay's origin.
  const configuredEndpoint = option('endpoint');
  endpoint = new URL(configuredEndpoint || 'e', configuredEndpoint ? document.baseURI : script.src);
  endpoint.searchParams.set('k', option('key'));

  customPixelEvents = {};
  (option('fbq-custom') || '').split(',').forEach((pair) => {
    pair = pair.split(':');
    if (pair[1]) customPixelEvents[pair[0].trim()] = pair[1].trim();
  });
}
