// The visit: what every event of this tab's session carries. The user fields from identify,
// the campaign and the ad click ids from the landing URL, kept in sessionStorage so that a
// purchase three pages later still carries its campaign.
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

const USER_FIELDS = 'email phone first_name last_name full_name';

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

// comet('identify', {...}): only the user fields, as strings, since anything else would get
// every later event refused.
export function identify(user) {
  USER_FIELDS.split(' ').forEach((field) => {
    if (user[field] != null) visit[field] = '' + user[field];
  });
  saveVisit();
}
