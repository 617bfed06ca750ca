// Canary admin: disable an action's submit button once pressed, so a double click sends one
// request. The server refuses a second one anyway (expected_status); this only spares the message.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-canary-once")) {
    return;
  }
  if (form.dataset.canarySubmitted === "1") {
    event.preventDefault();
    return;
  }
  form.dataset.canarySubmitted = "1";
  for (const button of form.querySelectorAll("input[type=submit], button[type=submit]")) {
    // Disable after the submit event has gathered the form data.
    setTimeout(() => { button.disabled = true; }, 0);
  }
});
