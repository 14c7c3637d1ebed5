// The visit: what every event of this tab's session carries. The user fields from identify
// (and from submitted forms), the campaign and the ad click ids from the landing URL, kept in
// sessionStorage so that a purchase three pages later still carries its campaign.
import { readStored, writeStored } from './storage.js';

export let visit;

// Each comet_X event field and the utm_ parameter it falls back to (0: none). An explicit
// comet_X parameter wins, and no other comet_* name is taken from a URL.
const CAMPAIGN_FIELDS = {
  source: 'source',
  network: 0,
  campaign: 'campaign',
  ad_group: 0,
  ad_id: 'content',
  keyword: 'term',
  type: 'medium',
};

// The user fields, and what a value must look like to be kept (trimmed): a wrong one would
// only be dropped by the relay. A phone number: digits, spaces, + ( ) . -, at least 7.
const NAME = /\S/;
export const USER_FIELDS = {
  email: /^\S+@\S+\.\S+$/,
  phone: /^\+?[\d\s().-]{7,}$/,
  first_name: NAME,
  last_name: NAME,
  full_name: NAME,
};

// (A wrong value that an older snippet stored, such as an empty email, is dropped by the relay
// from each event, which it keeps.)
export function startVisit() {
  visit = readStored('v') || {};
  const query = new URL(location.href).searchParams;
  const campaign = {};
  for (const field in CAMPAIGN_FIELDS) {
    const utm = CAMPAIGN_FIELDS[field];
    const value = query.get('comet_' + field) || (utm && query.get('utm_' + utm));
    if (value) campaign['comet_' + field] = value;
  }
  if (Object.keys(campaign).length) {
    // a new campaign replaces the old one whole rather than mixing with it
    for (const field in visit) if (field.startsWith('comet_')) delete visit[field];
    Object.assign(visit, campaign);
  }
  ['fbclid', 'gclid'].forEach((clickId) => {
    if (query.get(clickId)) visit[clickId] = query.get(clickId);
  });
  saveVisit();
}

export function saveVisit() {
  writeStored('v', visit);
}

// comet('identify', {...}) and submitted forms: only the user fields, as trimmed strings, and
// only valid values; a wrong one is dropped with a warning naming it, and the visit keeps
// what it had.
export function identify(user) {
  for (const field in USER_FIELDS) {
    if (user[field] != null) {
      const value = ('' + user[field]).trim();
      if (USER_FIELDS[field].test(value)) visit[field] = value;
      else console.warn('comet: invalid ' + field, user[field]);
    }
  }
  saveVisit();
}
