// Keyboard shortcuts of the review console: a = approve, r = remove, 1-9 = relabel, s = skip.
// Served from /review/static (the page's Content-Security-Policy allows no inline script).
"use strict";
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  var target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
  var button = document.querySelector('#note button[data-key="' + CSS.escape(event.key) + '"]');
  if (!button || button.disabled) return;
  event.preventDefault();
  document.querySelectorAll("#note button").forEach(function (b) { b.disabled = true; });
  button.disabled = false;
  button.form.requestSubmit(button);
});
