// Worklist: live rows. Every few seconds the page is fetched again with the filters it was opened with, and only the
// table's rows are replaced, so new studies (anyone's) and finished jobs appear while typed search text, unsent
// filter choices, focus and scroll position stay as they are.
(function () {
  "use strict";
  const POLL_MS = 3000;
  async function refreshRows() {
    const table = document.getElementById("worklist");
    if (!table || document.hidden) return;
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin", headers: { Accept: "text/html", "X-Background": "1" },  // polling is not use: idle timeout
      });
      if (response.redirected && new URL(response.url).pathname === "/login") {  // session over: hide the list
        window.location.assign(response.url); return;
      }
      if (!response.ok || response.redirected) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").querySelector("#worklist tbody");
      const rows = table.querySelector("tbody");
      if (fresh && rows && fresh.innerHTML !== rows.innerHTML) rows.replaceWith(document.adoptNode(fresh));
    } catch (error) { /* network hiccup: try again next round */ }
  }
  window.setInterval(refreshRows, POLL_MS);
  const form = document.getElementById("upload-form");
  if (form) form.addEventListener("submit", () => {
    const button = document.getElementById("upload-button");
    button.disabled = true; button.textContent = "Uploading…";
  });
})();
