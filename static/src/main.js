/* The comet-relay browser snippet. The relay serves static/comet.min.js, bundled and minified
 * from these modules by scripts/build-snippet. The tag, whose first line (static/comet-stub.js)
 * goes before the Meta pixel's base code:
 *
 *   <script>STUB LINE</script>
 *   <script async src="https://YOUR-RELAY/comet.js" data-key="pk_acme"></script>
 *
 * Never throw into the host page: the start is one try block, and everything the browser or
 * the page calls back later catches, or ends its promise chain in a handler (so no module does
 * any work when it is loaded, only in the functions called from here). Never block it: async,
 * the fingerprint in idle time, no synchronous requests. Automated browsers are treated like
 * any other.
 */
import { comet } from './api.js';
import { consentRequired, pixelMirroring, readConfig } from './config.js';
import { setConsented } from './consent.js';
import { startFingerprint } from './fingerprint.js';
import { startForms } from './forms.js';
import { sendAllWhenHidden, sendSoon, startNetwork } from './network.js';
import { followNavigation, trackPageviewAutomatically } from './pageviews.js';
import { startPixel } from './pixel.js';
import { PERSISTENT, readStored } from './storage.js';
import { startTracking, track } from './track.js';
import { startVisit } from './visit.js';

// Not when the tag was pasted twice.
if (!(window.comet && window.comet.loaded)) {
  try {
    startTracking();
    readConfig();
    setConsented(!consentRequired || readStored('consent', PERSISTENT));
    startVisit();
    startFingerprint();

    const queued = (window.comet && window.comet.q) || []; // calls made before the snippet ran
    comet.loaded = true;
    window.comet = comet;
    startNetwork();
    if (pixelMirroring) startPixel((name, props) => track(name, props, true));
    queued.forEach((args) => comet.apply(0, args));
    trackPageviewAutomatically();
    sendSoon();

    followNavigation();
    sendAllWhenHidden();
    startForms();
  } catch (e) {}
}
