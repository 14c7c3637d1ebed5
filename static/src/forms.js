// Forms identify the visitor: when a form is submitted (a plain form, one the page sends with
// fetch after preventDefault, a React form), its email, phone and name fields are found by
// type, name, id and autocomplete, and given to identify(), which keeps only valid values.
// Only text, email and tel inputs: never a password or a hidden field, nor a card field (by
// its name, id or autocomplete); nothing before consent where consent is required; off with
// data-forms="off". The identity goes with the events that follow.
import { formCapture } from './config.js';
import { consented } from './consent.js';
import { identify, USER_FIELDS } from './visit.js';

// A field's words: "type name id autocomplete", in any case. The group that matches them names
// its user field, in the order of USER_FIELDS: email, phone, first_name, last_name, full_name
// ("name", "full_name", "your-name", not "username" or "company_name").
const FIELD_WORDS = /(mail)|(^tel|phone|mobile)|(given|first)|(family|last)|((?:^| |full.?|your.?)name(?: |$))/i;
const NEVER = /^(?!text |email |tel )|card|cc-|cvc/i;

export function startForms() {
  if (formCapture) document.addEventListener('submit', formSubmitted, true);
}

function formSubmitted(event) {
  try {
    const user = {};
    if (consented) {
      for (const field of event.target.elements) {
        const words = [field.type, field.name, field.id, field.autocomplete].join(' ');
        const found = !NEVER.test(words) && FIELD_WORDS.exec(words);
        if (found && field.value) user[Object.keys(USER_FIELDS)[found.indexOf(found[0], 1) - 1]] = field.value;
      }
      identify(user);
    }
  } catch (e) {}
}
