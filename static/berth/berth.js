// Berth's few behaviours that need script; the pages work without it (forms post as usual).
document.addEventListener("change", (event) => {
  // A header checkbox with data-select-all="NAME" checks or clears every NAME checkbox of its form.
  const all = event.target.closest("[data-select-all]");
  if (!all) return;
  for (const box of all.form.querySelectorAll(`input[type=checkbox][name="${all.dataset.selectAll}"]`)) {
    box.checked = all.checked;
  }
});
document.addEventListener("click", async (event) => {
  // A button with data-copy puts its value on the clipboard and says so.
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed: select the text";
  }
});
