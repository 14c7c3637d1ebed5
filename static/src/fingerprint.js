// The browser fingerprint: stable browser signals, never the IP, hashed in idle time. Events
// wait for it at most 800 ms, then go without it.

export let fingerprint;
export let fingerprintReady; // resolves when the fingerprint is there, or after 800 ms

export function startFingerprint() {
  fingerprintReady = new Promise((resolve) => {
    setTimeout(resolve, 800);
    // (as a setTimeout delay, requestIdleCallback's options object counts as 0)
    (window.requestIdleCallback || setTimeout)(
      () => {
        try {
          const signals = browserSignals();
          const subtle = crypto.subtle; // only in secure contexts
          (subtle
            ? subtle.digest('SHA-256', new TextEncoder().encode(signals)).then(toHex)
            : Promise.resolve(fallbackHash(signals))
          ).then((hash) => resolve((fingerprint = hash)), resolve);
        } catch (e) {
          resolve();
        }
      },
      { timeout: 300 }
    );
  });
}

function browserSignals() {
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d');
  context.font = '15px serif';
  context.fillText('comet \u{1F680} relay', 2, 16); // rendering differs by OS, fonts, GPU
  return [
    navigator.userAgent,
    navigator.languages,
    navigator.platform,
    navigator.hardwareConcurrency,
    navigator.deviceMemory,
    screen.width,
    screen.height,
    screen.colorDepth,
    Intl.DateTimeFormat().resolvedOptions().timeZone,
    canvas.toDataURL(),
  ].join('|');
}

// Where SubtleCrypto is missing: FNV-1a (32 bits) beside djb2-xor (21 bits), 53 bits in all.
function fallbackHash(text) {
  let fnv = 2166136261;
  let djb = 5381;
  for (let i = 0; i < text.length; i++) {
    fnv = Math.imul(fnv ^ text.charCodeAt(i), 16777619);
    djb = Math.imul(djb, 33) ^ text.charCodeAt(i);
  }
  return ((djb & 0x1fffff) * 4294967296 + (fnv >>> 0)).toString(16);
}

export function toHex(bytes) {
  return [...new Uint8Array(bytes)].map((byte) => (byte + 256).toString(16).slice(1)).join('');
}
