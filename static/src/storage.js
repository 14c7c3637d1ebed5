// Storage between pages. It may be missing or throw (privacy modes, sandboxed frames), so
// every access is guarded; nothing is written without consent where consent is required.
// Keys are prefixed "comet_". persistent: localStorage, else sessionStorage.
import { consented } from './consent.js';

export const PERSISTENT = true;

function store(persistent) {
  return window[persistent ? 'localStorage' : 'sessionStorage'];
}

export function readStored(key, persistent) {
  try {
    return JSON.parse(store(persistent).getItem('comet_' + key));
  } catch (e) {}
}

// A value of null or undefined removes the key, with or without consent.
export function writeStored(key, value, persistent) {
  try {
    const storage = store(persistent);
    value == null
      ? storage.removeItem('comet_' + key)
      : consented && storage.setItem('comet_' + key, JSON.stringify(value));
  } catch (e) {}
}
