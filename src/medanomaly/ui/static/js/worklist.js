// Worklist: refresh the rows of studies still queued or scoring; reload when one finishes.
(function () {
  "use strict";
  const pending = () => Array.from(document.querySelectorAll("#worklist tr[data-status='queued'], #worklist tr[data-status='scoring']"));
  async function poll() {
    const rows = pending();
    if (!rows.length) return;
    for (const row of rows) {
      try {
        const response = await fetch(`/api/studies/${row.dataset.study}`, { headers: { Accept: "application/json" } });
        if (!response.ok) continue;
        const study = await response.json();
        if (study.status === "done" || study.status === "failed") { window.location.reload(); return; }
        const badge = row.querySelector(".status-cell .badge");
        badge.textContent = study.status;
        badge.className = `badge status-${study.status}`;
        let text = row.querySelector(".progress-text");
        if (study.status === "scoring") {
          if (!text) { text = document.createElement("span"); text.className = "muted small progress-text"; badge.after(" ", text); }
          text.textContent = `${study.progress_done}/${study.progress_total}`;
        }
        row.dataset.status = study.status;
      } catch (error) { /* network hiccup: try again next round */ }
    }
    window.setTimeout(poll, 1500);
  }
  window.setTimeout(poll, 1000);
  const form = document.getElementById("upload-form");
  if (form) form.addEventListener("submit", () => {
    const button = document.getElementById("upload-button");
    button.disabled = true; button.textContent = "Uploading…";
  });
})();
