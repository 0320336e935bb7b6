// Retraining page: while a job is queued or running, poll its state and show its progress; reload when it ends.
(() => {
  const open = () => [...document.querySelectorAll("#retrain-jobs tr[data-job]")]
    .filter((row) => ["queued", "running"].includes(row.dataset.status));

  async function poll() {
    const rows = open();
    if (!rows.length) return;
    for (const row of rows) {
      try {
        const response = await fetch(`/api/retraining/${row.dataset.job}`, { headers: { Accept: "application/json" } });
        if (!response.ok) continue;
        const job = await response.json();
        row.querySelector("progress").value = job.progress;
        row.querySelector(".job-stage").textContent = job.stage || "";
        row.querySelector(".job-status").textContent = job.status;
        if (job.status !== row.dataset.status && !["queued", "running"].includes(job.status)) {
          window.location.reload();
          return;
        }
        row.dataset.status = job.status;
      } catch (error) {
        // a failed poll is retried on the next tick
      }
    }
    window.setTimeout(poll, 1000);
  }

  window.setTimeout(poll, 500);
})();
