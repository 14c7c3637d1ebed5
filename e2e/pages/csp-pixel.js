// The Meta pixel's base code and the order page's calls, as a file for a page whose
// Content-Security-Policy allows no inline script. With ?eid=ID, a Purchase with that id.
!function(f,b,e,v,n,t,s)
{if(f.fbq)return;n=f.fbq=function(){n.callMethod?
n.callMethod.apply(n,arguments):n.queue.push(arguments)};
if(!f._fbq)f._fbq=n;n.push=n;n.loaded=!0;n.version='2.0';
n.queue=[];t=b.createElement(e);t.async=!0;
t.src=v;s=b.getElementsByTagName(e)[0];
s.parentNode.insertBefore(t,s)}(window, document,'script',
'https://connect.facebook.net/en_US/fbevents.js');
fbq('init', '1234567890');
fbq('track', 'PageView');
var eid = new URLSearchParams(location.search).get('eid');
if (eid) fbq('track', 'Purchase', {value: 49, currency: 'EUR'}, {eventID: eid});
