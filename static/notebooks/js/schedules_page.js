// The Schedules page (templates/notebooks/schedules.html): a new schedule's time zone starts as this
// browser's rather than the server's default, UTC, when it is one the page offers (zoneinfo's names,
// #timezones). A form that came back with errors keeps what was typed: it has no data-browser-zone.

const field = document.querySelector("form[data-browser-zone] input[name=timezone]");
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
const offered = new Set(Array.from(document.querySelectorAll("#timezones option"), (option) => option.value));
if (field && offered.has(zone)) field.value = zone;
