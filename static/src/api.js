// The page's API, window.comet:
//   comet('track', name, props)   an event (props.event_id: the page's own id for it)
//   comet('identify', {email, phone, first_name, last_name, full_name})
//   comet('page')                 a page view, if the URL changed since the last one
//   comet('consent', true|false)  where data-consent="required"
//   comet('fbq', args)            a Meta pixel call, handed over by the stub line
import { setConsented } from './consent.js';
import { discardWaiting, sendSoon } from './network.js';
import { trackPageview } from './pageviews.js';
import { pixelCalled } from './pixel.js';
import { PERSISTENT, writeStored } from './storage.js';
import { track } from './track.js';
import { identify, saveVisit } from './visit.js';

export function comet(command, argument, props) {
  try {
    if (command == 'track') track(argument, props);
    if (command == 'identify') identify(argument);
    if (command == 'page') trackPageview();
    if (command == 'consent') consent(argument);
    if (command == 'fbq') pixelCalled(argument);
  } catch (e) {}
}

function consent(given) {
  setConsented(given);
  if (given) {
    writeStored('consent', 1, PERSISTENT);
    saveVisit();
    sendSoon();
  } else {
    // withdrawn: forget what waits and what is stored
    discardWaiting();
    writeStored('consent', null, PERSISTENT);
    writeStored('q', null, PERSISTENT);
    writeStored('v');
  }
}
