// Meta's pixel base code as Meta gives it to paste (fbevents.js from connect.facebook.net,
// which the e2e browser serves from the local stand-in e2e/pages/fbevents.js), wrapped in a
// function for a tag manager to run later: metaPixel(). pixelCalls() makes the page's own
// calls: init, PageView and, with ?eid=ID, a Purchase of 49 EUR with that event id.
function metaPixel() {
!function(f,b,e,v,n,t,s)
{if(f.fbq)return;n=f.fbq=function(){n.callMethod?
n.callMethod.apply(n,arguments):n.queue.push(arguments)};
if(!f._fbq)f._fbq=n;n.push=n;n.loaded=!0;n.version='2.0';
n.queue=[];t=b.createElement(e);t.async=!0;
t.src=v;s=b.getElementsByTagName(e)[0];
s.parentNode.insertBefore(t,s)}(window, document,'script',
'https://connect.facebook.net/en_US/fbevents.js');
}

function pixelCalls() {
  fbq('init', '1234567890');
  fbq('track', 'PageView');
  var eid = new URLSearchParams(location.search).get('eid');
  if (eid) fbq('track', 'Purchase', { value: 49, currency: 'EUR' }, { eventID: eid });
}
