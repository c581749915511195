// Modal dialogs on the native <dialog> element: showModal() traps focus and Escape
// closes it; we put focus on the first control and give it back to the opener.

import { h } from "./dom.js";

/**
 * Open a modal with a title and body nodes; returns {dialog, close}. `onClose` runs
 * once, whichever way the dialog was closed (button, Escape, close()).
 */
export function openDialog(title, body, { onClose, labelledBy } = {}) {
  const opener = document.activeElement;
  const heading = h("h2", { id: labelledBy || `dlg-${Date.now()}`, text: title });
  const closeButton = h("button", { type: "button", class: "icon-button dialog-close", "aria-label": "Close", text: "×" });
  const dialog = h(
    "dialog",
    { class: "dialog", "aria-labelledby": heading.id },
    h("div", { class: "dialog-head" }, heading, closeButton),
    h("div", { class: "dialog-body" }, body),
  );
  let closed = false;
  const close = () => {
    if (!closed && dialog.open) dialog.close();
  };
  closeButton.addEventListener("click", close);
  dialog.addEventListener("close", () => {
    if (closed) return;
    closed = true;
    dialog.remove();
    if (onClose) onClose();
    if (opener && typeof opener.focus === "function" && document.contains(opener)) opener.focus();
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  const first = dialog.querySelector(".dialog-body input, .dialog-body select, .dialog-body textarea, .dialog-body button");
  if (first) first.focus();
  return { dialog, close };
}
