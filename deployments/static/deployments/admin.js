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

// The traffic slider: show the chosen value beside it; preset buttons move it.
function canaryShowSliderValue(slider) {
  const shown = document.getElementById(`${slider.id}_shown`);
  if (shown) {
    shown.textContent = `${slider.value}%`;
  }
}
document.addEventListener("input", (event) => {
  if (event.target instanceof HTMLInputElement && event.target.hasAttribute("data-canary-slider")) {
    canaryShowSliderValue(event.target);
  }
});
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-canary-preset]") : null;
  if (!button) {
    return;
  }
  const slider = document.getElementById(button.dataset.for);
  if (slider) {
    slider.value = button.dataset.canaryPreset;
    canaryShowSliderValue(slider);
  }
});

// Put a fetched fragment in place: each [data-canary-slot] part replaces the content of the
// page element it names (the verdict at the top), the rest becomes the live block.
function canaryFillLive(live, html) {
  const fragment = document.createElement("template");
  fragment.innerHTML = html;
  for (const part of fragment.content.querySelectorAll("[data-canary-slot]")) {
    const slot = document.getElementById(part.dataset.canarySlot);
    if (slot) {
      slot.replaceChildren(...part.childNodes);
    }
    part.remove();
  }
  live.replaceChildren(fragment.content);
}

// The Actions bar of a page whose deployment changed underneath it: every button disabled
// in place, and the bar says what changed with a reload link. Acting needs a fresh page.
function canaryDisableActions(now) {
  const bar = document.getElementById("canary-actions");
  if (!bar || bar.dataset.stale === "1") {
    return;
  }
  bar.dataset.stale = "1";
  bar.classList.add("canary-changed-actions");
  for (const button of bar.querySelectorAll("a.canary-button")) {
    button.removeAttribute("href");
    button.setAttribute("aria-disabled", "true");
    button.setAttribute("tabindex", "-1");
  }
  const state = document.getElementById("canary-actions-state");
  if (state) {
    state.textContent = `changed: ${now}. `;
    const reload = document.createElement("a");
    reload.href = window.location.href;
    reload.id = "canary-reload";
    reload.textContent = "Reload";
    state.append(reload);
  }
}

// "Skip to actions" lands on the verdict's action itself (the first button), not just near it.
document.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest("[data-canary-skip]") : null;
  if (!link) {
    return;
  }
  const target = document.getElementById("canary-first-action")
    || document.querySelector(".canary-row-action")
    || document.getElementById("canary-actions");
  if (target) {
    event.preventDefault();
    target.focus();
  }
});

// The deployment page's live block (monitor, step, breaker, v1 vs v2, chart) and its verdict
// re-fetched in place every few seconds; nothing else on the page is touched. When the deployment itself
// changed (status or traffic), the action buttons above are stale: say so, keep refreshing.
function canaryStartLiveRefresh() {
  const live = document.getElementById("canary-live");
  if (!live || !live.dataset.refreshUrl) {
    return;
  }
  const seconds = Math.max(1, Number(live.dataset.refreshSeconds || 30));
  const refresh = async () => {
    if (document.visibilityState === "hidden") {
      return;
    }
    try {
      const response = await fetch(live.dataset.refreshUrl, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      });
      if (!response.ok) {
        return;
      }
      canaryFillLive(live, await response.text());
      live.dataset.refreshed = String(Number(live.dataset.refreshed || 0) + 1);
      const status = response.headers.get("X-Canary-Status");
      const traffic = response.headers.get("X-Canary-Traffic");
      const notice = document.getElementById("canary-changed");
      if (status && (status !== live.dataset.status || traffic !== live.dataset.traffic)) {
        const now = `now ${status} at ${traffic}% traffic`;
        if (notice) {
          notice.hidden = false;
          notice.querySelector("span").textContent = now;
        }
        canaryDisableActions(now);
      }
    } catch (error) {
      // A missed refresh is harmless: the next one tries again.
    }
  };
  setInterval(refresh, seconds * 1000);
}
// The home page's block (monitor, running canaries, compensation pending) re-fetched in place
// the same way: the page, its scroll position and anything typed elsewhere stay put.
function canaryStartHomeRefresh() {
  const home = document.getElementById("canary-home");
  if (!home || !home.dataset.refreshUrl) {
    return;
  }
  const seconds = Math.max(1, Number(home.dataset.refreshSeconds || 30));
  setInterval(async () => {
    if (document.visibilityState === "hidden") {
      return;
    }
    try {
      const response = await fetch(home.dataset.refreshUrl, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      });
      if (response.ok) {
        home.innerHTML = await response.text();
        home.dataset.refreshed = String(Number(home.dataset.refreshed || 0) + 1);
      }
    } catch (error) {
      // A missed refresh is harmless: the next one tries again.
    }
  }, seconds * 1000);
}

function canaryStart() {
  canaryStartLiveRefresh();
  canaryStartHomeRefresh();
}
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", canaryStart);
} else {
  canaryStart();
}
