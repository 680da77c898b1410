// The Monitoring pages: times shown in the browser's own zone (the server sends ISO 8601 in UTC), also
// after each htmx refresh; custom range fields typed without an offset are read in the browser's zone.
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.textContent = when.toLocaleString(); el.title = el.getAttribute("datetime"); }
    });
  }
  function withOffset(text) {
    if (!text || /([zZ]|[+-]\d\d:?\d\d)$/.test(text)) { return text; }
    var when = new Date(text);  // no offset: the browser's local time
    return isNaN(when) ? text : when.toISOString();
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var form = document.getElementById("monitoring-filters");
    if (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("[data-local-time-input]").forEach(function (input) { input.value = withOffset(input.value); });
      });
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) { localTimes(event.target); });
})();
